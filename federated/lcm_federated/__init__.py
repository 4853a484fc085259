"""lcm's Flower app: DiLoCo across sites whose data never leaves them.

The ServerApp (`server_app.py`) owns the outer optimiser (`diloco.py`: SGD with Nesterov
momentum on pseudo-gradients, robust aggregation, screening of updates, checkpoints); the
ClientApp (`client_app.py`) hands each round to `lcm fed-step`, which owns the learning.
"""
