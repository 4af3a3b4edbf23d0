"""surgewatch/reports"""
