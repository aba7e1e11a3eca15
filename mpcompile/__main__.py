from mpcompile.cli.main import main

main()
