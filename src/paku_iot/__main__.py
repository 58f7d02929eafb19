from paku_iot.cli.main import main

raise SystemExit(main())
