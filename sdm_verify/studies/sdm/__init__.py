"""The SDM paper's study (Jo & Choi, arXiv 2602.12624): its Wasserstein-bounded schedule (`schedule`, registered as
the "sdm" schedule through the `sdm_verify.schedules` entry point), its bounds against the exact W2 (`bounds`) and
the report section (`report`). SDM's adaptive solver is a solver like any other (`sdm_verify.solvers.sdm`)."""
