"""segstream's benchmarks: commands that measure and print figures (never timed tests).

Run by ``segstream bench training | stream | ops`` or ``make bench`` from a source checkout;
they are not part of the installed package.
"""
