"""The reproduction harness behind `reproduce.py`: runs a grid of configurations, publishes results.

    grids        grid files, and the runs (cells) they ask for
    running      trainer processes for the cells; what a finished run left behind
    estimates    means over seeds with Student-t intervals; claims by paired differences
    publishing   the markdown page, the CSV and the plots
    cli          the command line

It never imports TensorFlow.
"""
