package runc_test

const helperEnv = "POLYDEV_RUNC_TEST_HELPER"

func helperMain() int { return 0 }
