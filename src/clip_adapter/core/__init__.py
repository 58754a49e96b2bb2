"""Plumbing every layer may use: configs, errors, files, output folders, optimisation, progress, plots."""
