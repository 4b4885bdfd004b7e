"""`python -m training.data`: see `training.data.cli`."""

import sys

from training.data.cli import main

sys.exit(main())
