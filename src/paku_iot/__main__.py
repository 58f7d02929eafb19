from paku_iot.cli import main

raise SystemExit(main())
