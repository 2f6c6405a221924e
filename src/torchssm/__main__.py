import sys

from torchssm.cli import main

sys.exit(main())
