/* SPDX-License-Identifier: MIT */
/* Small helpers shared by the Check suites. */
#pragma once

#include <check.h>
#include <stdlib.h>

/* Run one suite; returns the process exit status. */
static inline int testutil_run(Suite *s)
{
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
