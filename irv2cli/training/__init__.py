"""``irv2 train``: a head of the user's own classes, fitted on the network's features."""
