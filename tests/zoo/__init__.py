"""The architecture zoo: research matting models' building blocks, written by the team, random but
seeded weights (conversion needs no trained weights). One file per architecture, each with a
``factory()``; tests/test_zoo.py takes every one through every target."""
