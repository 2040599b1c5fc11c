"""`python -m avatario_tools.train ...`"""

from avatario_tools.train.cli import app

app()
