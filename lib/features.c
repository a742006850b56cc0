/* SPDX-License-Identifier: MIT */
/*
 * IMU window features (166 for 6 axes).  For each of the 8 signals
 * ax, ay, az, gx, gy, gz, |acc|, |gyro| (in that order), 20 features:
 *   0 mean, 1 std, 2 min, 3 max, 4 median, 5 median absolute deviation,
 *   6 interquartile range, 7 mean square, 8 skewness, 9 kurtosis (excess),
 *   10 zero-crossing rate of the mean-removed signal,
 *   11-18 log energy of 8 equal bands of the rFFT bins 1..N/2 (mean removed),
 *   19 dominant rFFT bin (1..N/2) as a fraction of N/2;
 * then 160..162 the correlations acc x-y, x-z, y-z and 163..165 gyro x-y,
 * x-z, y-z.  docs/features.md lists the same.  The real FFT is KissFFT.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kiss_fftr.h>

#include "hdqt_data.h"

struct hdqt_feat {
	int window;
	kiss_fftr_cfg fft;
	float *sig;      /* 8 x window */
	float *tmp;      /* window, for sorting */
	float *fin;      /* window, FFT input */
	kiss_fft_cpx *fout;
};

int hdqt_feat_new(hdqt_feat **out, int window)
{
	if (!out || window < 16 || window > 4096 || window % 2 != 0)
		return HDQT_EINVAL;
	hdqt_feat *f = calloc(1, sizeof(*f));
	if (!f)
		return HDQT_ENOMEM;
	f->window = window;
	f->fft = kiss_fftr_alloc(window, 0, NULL, NULL);
	f->sig = malloc(sizeof(float) * HDQT_FEAT_SIGNALS * window);
	f->tmp = malloc(sizeof(float) * window);
	f->fin = malloc(sizeof(float) * window);
	f->fout = malloc(sizeof(kiss_fft_cpx) * (window / 2 + 1));
	if (!f->fft || !f->sig || !f->tmp || !f->fin || !f->fout) {
		hdqt_feat_free(f);
		return HDQT_ENOMEM;
	}
	*out = f;
	return 0;
}

void hdqt_feat_free(hdqt_feat *f)
{
	if (!f)
		return;
	if (f->fft)
		kiss_fftr_free(f->fft);
	free(f->sig);
	free(f->tmp);
	free(f->fin);
	free(f->fout);
	free(f);
}

int hdqt_feat_window(const hdqt_feat *f) { return f->window; }
int hdqt_feat_dim(const hdqt_feat *f) { (void)f; return HDQT_FEAT_DIM; }

int hdqt_feat_count_windows(int n, int window, int hop)
{
	if (window < 1 || hop < 1 || n < window)
		return 0;
	return (n - window) / hop + 1;
}

static int cmp_float(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;
	return (x > y) - (x < y);
}

/* Linear-interpolated quantile of sorted v (numpy's default). */
static float quantile(const float *v, int n, float q)
{
	float pos = q * (float)(n - 1);
	int i = (int)pos;
	float fr = pos - (float)i;
	return i + 1 < n ? v[i] + fr * (v[i + 1] - v[i]) : v[n - 1];
}

static void signal_features(hdqt_feat *f, const float *x, float *o)
{
	const int n = f->window;
	double s = 0, ss = 0;
	float mn = x[0], mx = x[0];
	for (int i = 0; i < n; i++) {
		s += x[i];
		ss += (double)x[i] * x[i];
		mn = x[i] < mn ? x[i] : mn;
		mx = x[i] > mx ? x[i] : mx;
	}
	double mean = s / n;
	double m2 = 0, m3 = 0, m4 = 0;
	for (int i = 0; i < n; i++) {
		double e = x[i] - mean, e2 = e * e;
		m2 += e2;
		m3 += e2 * e;
		m4 += e2 * e2;
	}
	m2 /= n;
	m3 /= n;
	m4 /= n;
	double sd = sqrt(m2);
	memcpy(f->tmp, x, sizeof(float) * n);
	qsort(f->tmp, (size_t)n, sizeof(float), cmp_float);
	float med = quantile(f->tmp, n, 0.5f);
	float iqr = quantile(f->tmp, n, 0.75f) - quantile(f->tmp, n, 0.25f);
	for (int i = 0; i < n; i++)
		f->tmp[i] = fabsf(x[i] - med);
	qsort(f->tmp, (size_t)n, sizeof(float), cmp_float);
	float mad = quantile(f->tmp, n, 0.5f);
	int zc = 0;
	for (int i = 1; i < n; i++)
		zc += ((x[i - 1] - mean) < 0) != ((x[i] - mean) < 0);
	o[0] = (float)mean;
	o[1] = (float)sd;
	o[2] = mn;
	o[3] = mx;
	o[4] = med;
	o[5] = mad;
	o[6] = iqr;
	o[7] = (float)(ss / n);
	/* A constant signal has no shape: skewness 0, excess kurtosis 0. */
	o[8] = m2 > 1e-12 ? (float)(m3 / (m2 * sd)) : 0.0f;
	o[9] = m2 > 1e-12 ? (float)(m4 / (m2 * m2) - 3.0) : 0.0f;
	o[10] = (float)zc / (float)(n - 1);
	for (int i = 0; i < n; i++)
		f->fin[i] = (float)(x[i] - mean);
	kiss_fftr(f->fft, f->fin, f->fout);
	const int half = n / 2, per = half / HDQT_FEAT_BANDS;
	int dom = 1;
	float best = -1.0f;
	for (int b = 0; b < HDQT_FEAT_BANDS; b++) {
		int k0 = 1 + b * per, k1 = b == HDQT_FEAT_BANDS - 1 ? half : k0 + per - 1;
		double e = 0;
		for (int k = k0; k <= k1; k++) {
			float p = f->fout[k].r * f->fout[k].r + f->fout[k].i * f->fout[k].i;
			e += p;
			if (p > best) {
				best = p;
				dom = k;
			}
		}
		o[11 + b] = (float)log(e / n + 1e-6);
	}
	o[19] = (float)dom / (float)half;
}

static float corr(const float *a, const float *b, int n)
{
	double sa = 0, sb = 0;
	for (int i = 0; i < n; i++) {
		sa += a[i];
		sb += b[i];
	}
	double ma = sa / n, mb = sb / n, ab = 0, aa = 0, bb = 0;
	for (int i = 0; i < n; i++) {
		double x = a[i] - ma, y = b[i] - mb;
		ab += x * y;
		aa += x * x;
		bb += y * y;
	}
	return aa > 1e-12 && bb > 1e-12 ? (float)(ab / sqrt(aa * bb)) : 0.0f;
}

int hdqt_feat_extract(hdqt_feat *f, const float *rows, float *out)
{
	if (!f || !rows || !out)
		return HDQT_EINVAL;
	const int n = f->window;
	for (int i = 0; i < n * HDQT_FEAT_CHANNELS; i++)
		if (!isfinite(rows[i]) || fabsf(rows[i]) > 1e6f)
			return HDQT_ERANGE;
	float *sig = f->sig;
	for (int i = 0; i < n; i++) {
		const float *r = rows + i * HDQT_FEAT_CHANNELS;
		for (int c = 0; c < HDQT_FEAT_CHANNELS; c++)
			sig[c * n + i] = r[c];
		sig[6 * n + i] = sqrtf(r[0] * r[0] + r[1] * r[1] + r[2] * r[2]);
		sig[7 * n + i] = sqrtf(r[3] * r[3] + r[4] * r[4] + r[5] * r[5]);
	}
	for (int s = 0; s < HDQT_FEAT_SIGNALS; s++)
		signal_features(f, sig + s * n, out + s * HDQT_FEAT_PER_SIGNAL);
	float *c = out + HDQT_FEAT_SIGNALS * HDQT_FEAT_PER_SIGNAL;
	for (int g = 0; g < 2; g++) {
		const float *x = sig + (3 * g) * n, *y = x + n, *z = y + n;
		c[3 * g + 0] = corr(x, y, n);
		c[3 * g + 1] = corr(x, z, n);
		c[3 * g + 2] = corr(y, z, n);
	}
	return 0;
}

const char *hdqt_feat_name(int i, char *buf, size_t n)
{
	static const char *const sigs[HDQT_FEAT_SIGNALS] = {"ax", "ay", "az", "gx", "gy", "gz", "acc", "gyro"};
	static const char *const stats[11] = {"mean", "std", "min", "max", "median", "mad",
					      "iqr", "meansq", "skew", "kurt", "zcr"};
	static const char *const cors[6] = {"acc_corr_xy", "acc_corr_xz", "acc_corr_yz",
					    "gyro_corr_xy", "gyro_corr_xz", "gyro_corr_yz"};
	if (i < 0 || i >= HDQT_FEAT_DIM || !buf || n == 0)
		return NULL;
	if (i >= HDQT_FEAT_SIGNALS * HDQT_FEAT_PER_SIGNAL) {
		snprintf(buf, n, "%s", cors[i - HDQT_FEAT_SIGNALS * HDQT_FEAT_PER_SIGNAL]);
		return buf;
	}
	int s = i / HDQT_FEAT_PER_SIGNAL, k = i % HDQT_FEAT_PER_SIGNAL;
	if (k < 11)
		snprintf(buf, n, "%s_%s", sigs[s], stats[k]);
	else if (k < 19)
		snprintf(buf, n, "%s_band%d", sigs[s], k - 11);
	else
		snprintf(buf, n, "%s_dombin", sigs[s]);
	return buf;
}
