"""Safety tools: the classifier corpus generator and the model builder.

    python -m avatario_tools.safety build            # writes services/inference/safety/model/
    python -m avatario_tools.safety corpus [--split validation] [--label crisis] [-n 20]
"""
