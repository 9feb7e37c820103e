from .cli.main import main

if __name__ == "__main__":  # not when a spawned worker imports the main module
    main()
