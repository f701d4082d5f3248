from noisekit.cli import main

main()
