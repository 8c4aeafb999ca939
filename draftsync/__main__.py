"""`python -m draftsync` is the same program as the `draftsync` command."""

from draftsync.cli import main

raise SystemExit(main())
