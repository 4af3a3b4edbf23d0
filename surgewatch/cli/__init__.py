"""surgewatch/cli"""
