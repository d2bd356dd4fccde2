"""`python -m adapters_kit.cli`, as the `adapters-kit` script."""

import sys

from . import main

sys.exit(main())
