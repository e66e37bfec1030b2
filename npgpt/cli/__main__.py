"""`python -m npgpt.cli ...`: the same as the `npgpt` command."""

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
