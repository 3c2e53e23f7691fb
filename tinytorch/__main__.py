import sys

from tinytorch.cli import main

sys.exit(main())
