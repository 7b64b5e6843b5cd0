"""cDAL bundle modules: networks, schedule, training engine, inferer, transforms, checkpoint converter."""
