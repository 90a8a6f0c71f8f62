"""`python -m sdegen ...` (and `torchrun ... -m sdegen ...`): the command line of `sdegen.cli`."""

import sys

from sdegen.cli import main

sys.exit(main())
