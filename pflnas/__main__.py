import sys

from pflnas.cli.main import main

sys.exit(main())
