"""surgewatch/backtest"""
