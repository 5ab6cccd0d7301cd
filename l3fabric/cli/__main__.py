"""`python -m l3fabric.cli`, the same as the `l3fabric` script."""

import sys

from l3fabric.cli.main import main

sys.exit(main())
