import sys

from ditscale.cli import main

sys.exit(main())
