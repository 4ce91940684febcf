"""`python -m sdm_verify.cli ...`: the same as the `sdm-verify` command."""

import sys

from . import main

sys.exit(main())
