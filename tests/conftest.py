pytest_plugins = ["fixtures.service", "fixtures.live", "fixtures.swift", "fixtures.keystone"]
