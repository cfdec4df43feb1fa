from chartrl.cli import main

main()
