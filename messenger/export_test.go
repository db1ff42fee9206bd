package messenger_test

import "klassenfunk/server"

type serverConfig = server.Config
