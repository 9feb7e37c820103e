from .cli.main import program

if __name__ == "__main__":  # not when a spawned worker imports the main module
    program()
