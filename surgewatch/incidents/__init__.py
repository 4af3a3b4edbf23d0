"""surgewatch/incidents"""
