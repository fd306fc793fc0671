from sutra.cli import main

raise SystemExit(main())
