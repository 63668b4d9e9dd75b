from batch_scheduler.commands.main import main

raise SystemExit(main())
