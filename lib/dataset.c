/* SPDX-License-Identifier: MIT */
/*
 * Datasets: the raw HAPT directory (see ../shared/data/hapt/README.md:
 * labels are 1-based with inclusive ends) and feature CSV files.  Every
 * line is parsed with bounds and strtod end checks; a malformed file is an
 * HDQT_EFORMAT error, never a crash.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "hdqt_data.h"

#define MAX_LINE 65536
#define MAX_ROWS (1 << 24)

void hdqt_dataset_free(hdqt_dataset *ds)
{
	if (!ds)
		return;
	free(ds->X);
	free(ds->y);
	free(ds->user);
	memset(ds, 0, sizeof(*ds));
}

int hdqt_hapt_is_test_user(int user)
{
	static const int test[] = {2, 4, 9, 10, 12, 13, 18, 20, 24};
	for (size_t i = 0; i < sizeof(test) / sizeof(test[0]); i++)
		if (test[i] == user)
			return 1;
	return 0;
}

/* Parse up to max comma-separated numbers from s; returns how many, or -1 on junk. */
static int parse_numbers(char *s, double *out, int max)
{
	int k = 0;
	char *p = s;
	while (*p && *p != '\n' && *p != '\r') {
		if (k == max)
			return -1;
		char *end;
		errno = 0;
		double v = strtod(p, &end);
		if (end == p || errno == ERANGE)
			return -1;
		out[k++] = v;
		p = end;
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p == ',')
			p++;
		else if (*p && *p != '\n' && *p != '\r')
			return -1;
	}
	return k;
}

int hdqt_raw_read(const char *path, float **rows, int *n)
{
	if (!path || !rows || !n)
		return HDQT_EINVAL;
	gzFile g = gzopen(path, "rb");
	if (!g)
		return HDQT_EIO;
	char *line = malloc(MAX_LINE);
	size_t cap = 4096, cnt = 0;
	float *r = malloc(cap * 6 * sizeof(float));
	int rc = (line && r) ? 0 : HDQT_ENOMEM;
	int lineno = 0;
	while (rc == 0 && gzgets(g, line, MAX_LINE)) {
		lineno++;
		if (lineno == 1 && strncmp(line, "ax", 2) == 0)
			continue; /* header */
		if (line[0] == '\n' || line[0] == '\0')
			continue;
		double v[6];
		if (parse_numbers(line, v, 6) != 6) {
			rc = HDQT_EFORMAT;
			break;
		}
		if (cnt == cap) {
			if (cap >= MAX_ROWS) {
				rc = HDQT_ERANGE;
				break;
			}
			float *q = realloc(r, cap * 2 * 6 * sizeof(float));
			if (!q) {
				rc = HDQT_ENOMEM;
				break;
			}
			r = q;
			cap *= 2;
		}
		for (int c = 0; c < 6; c++)
			r[cnt * 6 + c] = (float)v[c];
		cnt++;
	}
	int err;
	gzerror(g, &err);
	if (rc == 0 && err != Z_OK && err != Z_STREAM_END)
		rc = HDQT_EIO;
	gzclose(g);
	free(line);
	if (rc < 0) {
		free(r);
		return rc;
	}
	*rows = r;
	*n = (int)cnt;
	return 0;
}

typedef struct seg { int exp, user, act, start, end; } seg;

static int read_labels(const char *dir, seg **out, int *n)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/labels.csv", dir);
	FILE *fp = fopen(path, "r");
	if (!fp)
		return HDQT_EIO;
	char line[512];
	int cap = 256, cnt = 0, rc = 0;
	seg *s = malloc(sizeof(seg) * cap);
	if (!s) {
		fclose(fp);
		return HDQT_ENOMEM;
	}
	while (fgets(line, sizeof(line), fp)) {
		if (strncmp(line, "exp", 3) == 0)
			continue;
		double v[5];
		if (parse_numbers(line, v, 5) != 5 || v[3] < 1 || v[4] < v[3] || v[2] < 1 || v[2] > 64) {
			rc = HDQT_EFORMAT;
			break;
		}
		if (cnt == cap) {
			seg *q = realloc(s, sizeof(seg) * cap * 2);
			if (!q) {
				rc = HDQT_ENOMEM;
				break;
			}
			s = q;
			cap *= 2;
		}
		s[cnt++] = (seg){(int)v[0], (int)v[1], (int)v[2], (int)v[3], (int)v[4]};
	}
	fclose(fp);
	if (rc < 0) {
		free(s);
		return rc;
	}
	*out = s;
	*n = cnt;
	return 0;
}

static int ds_reserve(hdqt_dataset *ds, int want, int *cap)
{
	if (want <= *cap)
		return 0;
	int c = *cap ? *cap * 2 : 1024;
	while (c < want)
		c *= 2;
	float *X = realloc(ds->X, sizeof(float) * (size_t)c * ds->d);
	if (!X)
		return HDQT_ENOMEM;
	ds->X = X;
	int *y = realloc(ds->y, sizeof(int) * c);
	if (!y)
		return HDQT_ENOMEM;
	ds->y = y;
	int *u = realloc(ds->user, sizeof(int) * c);
	if (!u)
		return HDQT_ENOMEM;
	ds->user = u;
	*cap = c;
	return 0;
}

int hdqt_hapt_load(const char *dir, int window, int hop, hdqt_dataset *out)
{
	if (!dir || !out || hop < 1)
		return HDQT_EINVAL;
	hdqt_feat *f;
	int rc = hdqt_feat_new(&f, window);
	if (rc < 0)
		return rc;
	seg *segs = NULL;
	int nseg = 0;
	rc = read_labels(dir, &segs, &nseg);
	if (rc < 0) {
		hdqt_feat_free(f);
		return rc;
	}
	hdqt_dataset ds = {.d = HDQT_FEAT_DIM};
	int cap = 0;
	float *rows = NULL;
	int nrows = 0, cur_exp = -1, loaded_any = 0;
	for (int s = 0; s < nseg && rc == 0; s++) {
		if (segs[s].exp != cur_exp) {
			char path[4096];
			snprintf(path, sizeof(path), "%s/exp%02d_user%02d.csv.gz", dir, segs[s].exp,
				 segs[s].user);
			free(rows);
			rows = NULL;
			nrows = 0;
			cur_exp = segs[s].exp;
			int r2 = hdqt_raw_read(path, &rows, &nrows);
			if (r2 == HDQT_EIO)
				continue; /* a subset directory may hold some experiments only */
			if (r2 < 0) {
				rc = r2;
				break;
			}
			loaded_any = 1;
		}
		if (!rows)
			continue;
		int a = segs[s].start - 1, b = segs[s].end - 1; /* 1-based inclusive */
		if (b >= nrows) {
			rc = HDQT_EFORMAT;
			break;
		}
		int nw = hdqt_feat_count_windows(b - a + 1, window, hop);
		if ((rc = ds_reserve(&ds, ds.n + nw, &cap)) < 0)
			break;
		for (int w = 0; w < nw && rc == 0; w++) {
			rc = hdqt_feat_extract(f, rows + (size_t)(a + w * hop) * 6,
					       ds.X + (size_t)ds.n * ds.d);
			ds.y[ds.n] = segs[s].act;
			ds.user[ds.n] = segs[s].user;
			ds.n++;
		}
	}
	free(rows);
	free(segs);
	hdqt_feat_free(f);
	if (rc == 0 && !loaded_any)
		rc = HDQT_EIO;
	if (rc < 0) {
		hdqt_dataset_free(&ds);
		return rc;
	}
	*out = ds;
	return 0;
}

int hdqt_csv_load(const char *path, hdqt_dataset *out)
{
	if (!path || !out)
		return HDQT_EINVAL;
	FILE *fp = fopen(path, "r");
	if (!fp)
		return HDQT_EIO;
	char *line = malloc(MAX_LINE);
	double *v = malloc(sizeof(double) * (HDQT_MAX_DIM + 2));
	hdqt_dataset ds = {0};
	int cap = 0, rc = (line && v) ? 0 : HDQT_ENOMEM, lineno = 0;
	while (rc == 0 && fgets(line, MAX_LINE, fp)) {
		lineno++;
		if (!strchr(line, '\n') && !feof(fp)) {
			rc = HDQT_EFORMAT; /* line longer than MAX_LINE */
			break;
		}
		if (lineno == 1 && strncmp(line, "label", 5) == 0) {
			/* The header fixes the width: label, user, then d features. */
			int fields = 1;
			for (const char *p = line; *p; p++)
				fields += *p == ',';
			if (fields < 3 || fields - 2 > HDQT_MAX_DIM) {
				rc = HDQT_EFORMAT;
				break;
			}
			ds.d = fields - 2;
			continue;
		}
		if (line[0] == '\n')
			continue;
		int k = parse_numbers(line, v, HDQT_MAX_DIM + 2);
		if (k < 3 || (ds.d && k - 2 != ds.d)) {
			rc = HDQT_EFORMAT;
			break;
		}
		if (!ds.d)
			ds.d = k - 2;
		if (v[0] != floor(v[0]) || v[1] != floor(v[1]) || fabs(v[0]) > 1e6 || fabs(v[1]) > 1e6) {
			rc = HDQT_EFORMAT;
			break;
		}
		for (int j = 2; j < k; j++)
			if (!isfinite(v[j])) {
				rc = HDQT_ERANGE;
				break;
			}
		if (rc < 0 || (rc = ds_reserve(&ds, ds.n + 1, &cap)) < 0)
			break;
		ds.y[ds.n] = (int)v[0];
		ds.user[ds.n] = (int)v[1];
		for (int j = 0; j < ds.d; j++)
			ds.X[(size_t)ds.n * ds.d + j] = (float)v[j + 2];
		ds.n++;
	}
	fclose(fp);
	free(line);
	free(v);
	if (rc == 0 && ds.n == 0)
		rc = HDQT_EFORMAT;
	if (rc < 0) {
		hdqt_dataset_free(&ds);
		return rc;
	}
	*out = ds;
	return 0;
}
