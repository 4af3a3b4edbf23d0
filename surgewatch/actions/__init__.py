"""surgewatch/actions"""
