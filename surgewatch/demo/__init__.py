"""``surgewatch demo``: a scripted day served by a local feed server, run through the real pipeline."""
