pytest_plugins = ["fixtures.service", "fixtures.live"]
