pytest_plugins = ["fixtures.service"]
