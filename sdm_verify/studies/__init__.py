"""One paper's study per subpackage, built on the harness (e.g. `sdm_verify.studies.sdm`, the SDM paper)."""
