import sys

from tympan.cli import main

sys.exit(main())
