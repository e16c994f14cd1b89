"""Running asprof workers on several ranks: local loopback rings, network-namespace rings and
`mlx.launch` hostfiles, with a watchdog that ends a broken run (DESIGN §6-7)."""
