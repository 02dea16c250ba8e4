"""Every picture the project draws, one module per picture, each on `matplotlib.figure.Figure`
(no pyplot, no global backend): a function takes the record's data and a path and writes a PNG.
"""
