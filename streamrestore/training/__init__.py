"""Training IR-CM: settings, data, losses and the loop."""
