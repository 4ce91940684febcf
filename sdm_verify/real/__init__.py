"""The harness on real (trained) denoisers: a checked reference solution, measured orders, SDM against the
baselines at equal NFE, sample quality; results in the theory part's store and report (`sdm-verify real`)."""
