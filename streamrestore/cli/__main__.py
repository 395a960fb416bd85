"""`python -m streamrestore.cli`: the command line."""
from streamrestore.cli import main

raise SystemExit(main())
