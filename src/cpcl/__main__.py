import sys

from cpcl.cli import main

sys.exit(main())
