from protolab.cli import main

raise SystemExit(main())
