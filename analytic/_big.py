"""Where the mixture's scaled (overflow-free) forms take over (analytic/gmm.py docstring)."""

#: above this sigma or this |x - mu_k| (relative to sqrt(l_min / d)) the scaled form is used
BIG = 1e150
