/* SPDX-License-Identifier: MIT */
/*
 * Writes the seed inputs of the blob target: small real model blobs made
 * with hdqt_model_new + hdqt_model_fit_norm + hdqt_model_save (one per
 * quantisation mode, one without hidden layers, one with the forward
 * Hadamard transform, one with a BiC logit affine: format version 4's
 * last field).  Usage: fuzz_mkseed DIR (e.g. tests/fuzz/corpus/blob).
 */
#include <stdio.h>
#include <stdlib.h>

#include "hdqt.h"

static int write_model(const char *dir, const char *name, hdqt_mode mode, int n_hidden,
		       int fwd_hadamard, int affine)
{
	static const float A[3] = {1.0f, 1.25f, 0.5f}, B[3] = {0.0f, -0.75f, 2.0f};
	hdqt_qconfig q;
	hdqt_qconfig_default(&q, mode);
	q.fwd_hadamard = fwd_hadamard;
	if (hdqt_mode_is_hadanet(mode) && fwd_hadamard) /* for HadaNets: every layer binary */
		q.bin_layers = HDQT_BIN_ALL;
	hdqt_mlp_config c = {.n_in = 6, .n_hidden = n_hidden, .hidden = {8, 4}, .n_classes = 3};
	hdqt_model *m = NULL;
	float X[4 * 6];
	for (int i = 0; i < 4 * 6; i++)
		X[i] = (float)((i * 7) % 11) - 5.0f;
	uint8_t *blob = NULL;
	size_t len = 0;
	int rc = hdqt_model_new(&m, &c, &q, 42);
	if (rc == 0)
		rc = hdqt_model_fit_norm(m, X, 4, 3.0f);
	if (rc == 0 && affine)
		rc = hdqt_model_set_logit_affine(m, A, B);
	if (rc == 0)
		rc = hdqt_model_save(m, &blob, &len);
	hdqt_model_free(m);
	if (rc < 0) {
		fprintf(stderr, "mkseed: %s: %s\n", name, hdqt_strerror(rc));
		return 1;
	}
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(blob, 1, len, f) != len || fclose(f) != 0) {
		perror(path);
		return 1;
	}
	free(blob);
	printf("%s: %zu bytes\n", path, len);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: fuzz_mkseed DIR\n");
		return 2;
	}
	return write_model(argv[1], "hdqt-6-8-4-3.bin", HDQT_MODE_HDQT, 2, 0, 0) |
	       write_model(argv[1], "fp32-6-8-3.bin", HDQT_MODE_FP32, 1, 0, 0) |
	       write_model(argv[1], "int-6-3.bin", HDQT_MODE_INT, 0, 0, 0) |
	       write_model(argv[1], "hdqt-paper-fwdhad-6-8-3.bin", HDQT_MODE_HDQT_PAPER, 1, 1, 0) |
	       write_model(argv[1], "hadanet-all-6-8-4-3.bin", HDQT_MODE_HADANET, 2, 1, 0) |
	       write_model(argv[1], "hadanet-paper-6-8-4-3.bin", HDQT_MODE_HADANET_PAPER, 2, 0, 0) |
	       write_model(argv[1], "bic-affine-6-8-4-3.bin", HDQT_MODE_HDQT, 2, 0, 1);
}
