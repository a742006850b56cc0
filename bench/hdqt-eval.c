/* SPDX-License-Identifier: MIT */
/*
 * hdqt-eval: the class-incremental protocol on a dataset, printed as a
 * paper-style table or one JSON object.  Runs (quant mode x method x seed
 * x class order) are independent and spread over --jobs threads; each has
 * its own model, memory and PRNG streams, so results do not depend on the
 * thread count.
 *
 * Labels: the splits keep each sample's class as its index in the sorted
 * list of the dataset's labels; a run maps that index to its arrival
 * position under its class order (sh->rank), so one copy of the data
 * serves every order.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "hdqt.h"
#include "hdqt_data.h"
#include "hdqt_novelty.h"

#define MAX_TASKS 64
/* Runs are allocated on the heap; the bound keeps a typo (--seeds 16
 * --orders 64 over eight recipes) from asking for days of work. */
#define MAX_RUNS 1024
#define MAX_ORDERS 64

typedef struct opts {
	const char *data;
	hdqt_mode modes[HDQT_MODE_COUNT];
	int n_modes;
	hdqt_cl_method methods[HDQT_CL_COUNT];
	int n_methods;
	int bits, acc_bits, tile, init_classes, increment, memory, epochs, seeds, jobs, threads, json;
	int hidden[HDQT_MAX_LAYERS], n_hidden;
	int drop[64], n_drop, drop_set;
	float lr, norm_clip, lr_gamma, kd_lambda;
	int lr_step;
	const char *plot;
	hdqt_qconfig qover; /* hdqt-recipe overrides for ablations */
	int had_max, bwd_tile, fwd_had, fwd_gran, bwd_gran, bwd_fwdq;
	float fwd_clip, fwd_sigma;
	int window, hop;
	int er_reservoir;
	/* HadaNets knobs (hadanet modes only; -1: the recipe's) */
	int beta_w, beta_a, bin_layers, edges, act_bin, mean_term, w_centre;
	float ste_clip;
	const char *dump;
	/* class order: 0 sorted labels, 1 --class-order LIST, 2 random */
	int order_kind, orders;
	int order_list[HDQT_MAX_CLASSES], n_order_list;
	/* open set: the last open_set classes of each order are never announced */
	int open_set, novelty_kind;
	float unknown_rate;
} opts;

typedef struct split {
	int n, d;
	float *X;
	int *y; /* 0..C-1 in arrival order */
} split;

typedef struct run_result {
	hdqt_mode mode;
	hdqt_cl_method method;
	int seed;
	int order;         /* index into shared.order_ids */
	int n_tasks;
	int seen[MAX_TASKS];
	double acc[MAX_TASKS], nme[MAX_TASKS];
	double f1_macro[MAX_TASKS], f1_micro[MAX_TASKS]; /* logits, on the seen classes */
	double *class_forget; /* C, by sorted class index; NaN for the last task's classes */
	double task_acc[MAX_TASKS][MAX_TASKS]; /* after task t, on classes of task j */
	double sps;
	/* --open-set, per novelty score: AUROC of unseen against known test
	 * windows, fraction called unknown of known and of unseen ones (NaN:
	 * the score needs exemplars the method keeps none of) */
	double os[HDQT_NOVELTY_COUNT][3];
	hdqt_bin_stats bst[HDQT_MAX_LAYERS]; /* HadaNets: the final model on the training users */
	int diverged_task; /* 1-based task whose training diverged (loss not finite), 0 if none */
	int rc;
} run_result;

typedef struct shared {
	const opts *o;
	split train, test, calib; /* calib: --open-set's calibration users, not trained on */
	int C, n_tasks, task_end[MAX_TASKS];
	int class_ids[HDQT_MAX_CLASSES]; /* the labels, sorted: a split's class c is class_ids[c] */
	int n_orders;
	int order_ids[MAX_ORDERS][HDQT_MAX_CLASSES]; /* labels in arrival order, per class order */
	int rank[MAX_ORDERS][HDQT_MAX_CLASSES];      /* sorted index -> arrival position */
	float *mean, *std;
	run_result *runs;
	int n_runs, next, done_epochs, total_epochs;
	pthread_mutex_t mu;
	int tty;
} shared;

static void usage(FILE *f)
{
	fprintf(f,
		"usage: hdqt-eval --data DIR|CSV [options]\n"
		"  --quant LIST        fp32,int,hdqt-paper,hdqt,hadanet,hadanet-paper,xnor,hbwn (default hdqt)\n"
		"  --method LIST       icarl,bic,er,lwf,finetune (default icarl)\n"
		"  --class-order LIST|random  arrival order of the classes: their labels, comma-\n"
		"                      separated (every class once), or a random order per --orders\n"
		"                      index (default: labels in increasing order)\n"
		"  --orders K          average over K random class orders (1; with a LIST, 1)\n"
		"  --open-set K        never announce the last K classes of each order; after the\n"
		"                      last task, report how well unknown windows are told apart\n"
		"                      (calibration on training users 1 in 7, not trained on)\n"
		"  --unknown-rate R    target false-unknown rate of the calibration (0.05)\n"
		"  --novelty nme|knn|energy|msp  the score reported as open_set (nme; all are measured)\n"
		"  --bits B            matmul input bits (4)\n"
		"  --acc-bits A        tile accumulator bits (8)\n"
		"  --tile T            forward reduction tile (recipe default: 32)\n"
		"  --init-classes N    classes in the first task (2)\n"
		"  --increment N       classes per later task (2)\n"
		"  --memory M          exemplar budget (200)\n"
		"  --epochs E          epochs per task (100)\n"
		"  --hidden W,W        hidden widths (512,512)\n"
		"  --lr LR             learning rate (0.01)\n"
		"  --kd-lambda L       weight of the distillation term, T^2 KL (1)\n"
		"  --lr-step E         multiply the learning rate by --lr-gamma (0.1) every E epochs (0 = never)\n"
		"  --seeds K           seeds 1..K (3)\n"
		"  --jobs J            parallel runs (number of CPUs)\n"
		"  --threads T         threads per run (1); results do not depend on it\n"
		"  --drop-classes LIST labels left out (HAPT default 8; CSV default none)\n"
		"  --norm-clip C       clip standardised inputs at +-C (0 = off)\n"
		"  --window N --hop N  HAPT windowing (128, 64)\n"
		"  --er-selection random|reservoir   ER exemplar selection (random)\n"
		"  --dump-features CSV write the windows' features (label,user,f0,...) and exit\n"
		"  --json              one JSON object on stdout\n"
		"  --plot FILE.svg     accuracy per task for every run\n"
		"  --bwd-fwdq 0|1      backward products on the forward's quantised X, W (1)\n"
		"                      or on the float ones (0); any integer mode\n"
		"HadaNets knobs (hadanet, hadanet-paper, xnor, hbwn; default: the recipe's):\n"
		"  --beta-w N --beta-a N        segment lengths (0 = the whole row; 1 = full precision)\n"
		"  --bin-layers inner|all       binarised layers (inner: all but the first and last)\n"
		"  --edges fp32|hdqt            recipe of the other layers\n"
		"  --act-bin sign|mask|centre   binarisation of non-negative activations\n"
		"  --ste-clip C                 sign's gradient passes where |x| <= C (0 = everywhere)\n"
		"  --mean-term 0|1              Eq. 6's segment-mean factor in the weight gradient\n"
		"  --w-centre 0|1               binarise each weight row minus its mean\n"
		"hdqt recipe ablation knobs (hdqt mode only):\n"
		"  --fwd-hadamard 0|1 --fwd-gran tensor|row --bwd-gran tensor|row\n"
		"  --fwd-clip F --fwd-sigma S --bwd-tile T --had-max H\n");
}

static int parse_int(const char *s, int lo, int hi, int *out)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi)
		return -1;
	*out = (int)v;
	return 0;
}

static int parse_float(const char *s, float lo, float hi, float *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || *end || !(v >= lo && v <= hi))
		return -1;
	*out = (float)v;
	return 0;
}

static int parse_list_int(const char *s, int *out, int max, int lo, int hi)
{
	char buf[512];
	snprintf(buf, sizeof(buf), "%s", s);
	int n = 0;
	for (char *save, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		if (n == max || parse_int(t, lo, hi, &out[n]) < 0)
			return -1;
		n++;
	}
	return n;
}

/* --class-order LIST: comma-separated labels, at most HDQT_MAX_CLASSES;
 * their count, or -1 (also for a list too long for the buffer). */
static int parse_order_list(const char *s, int *out)
{
	char buf[8192];
	if (strlen(s) >= sizeof(buf))
		return -1;
	snprintf(buf, sizeof(buf), "%s", s);
	int n = 0;
	for (char *save, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		if (n == HDQT_MAX_CLASSES || parse_int(t, -1000000, 1000000, &out[n]) < 0)
			return -1;
		n++;
	}
	return n > 0 ? n : -1;
}

static void make_qconfig(const opts *o, hdqt_mode mode, hdqt_qconfig *q);

static int parse_opts(int argc, char **argv, opts *o)
{
	memset(o, 0, sizeof(*o));
	o->modes[0] = HDQT_MODE_HDQT;
	o->n_modes = 1;
	o->methods[0] = HDQT_CL_ICARL;
	o->n_methods = 1;
	o->bits = 4;
	o->acc_bits = 8;
	o->tile = -1; /* the recipe's own (32; hdqt: 8) */
	o->init_classes = 2;
	o->increment = 2;
	o->memory = 200;
	o->epochs = 100;
	o->seeds = 3;
	o->jobs = (int)sysconf(_SC_NPROCESSORS_ONLN);
	o->threads = 1;
	o->hidden[0] = o->hidden[1] = 512;
	o->n_hidden = 2;
	o->lr = 0.01f;
	o->lr_gamma = 0.1f;
	o->kd_lambda = 1.0f;
	o->window = 128;
	o->hop = 64;
	o->fwd_had = o->fwd_gran = o->bwd_gran = o->bwd_tile = o->had_max = o->bwd_fwdq = -1;
	o->fwd_clip = o->fwd_sigma = -1;
	o->beta_w = o->beta_a = o->bin_layers = o->edges = o->act_bin = o->mean_term = o->w_centre = -1;
	o->ste_clip = -1;
	o->orders = 1;
	o->unknown_rate = 0.05f;
	enum { O_INIT = 256, O_INC, O_ACC, O_DROP, O_FWDH, O_FWDG, O_BWDG, O_FWDC, O_FWDS,
	       O_BWDT, O_HADM, O_NCLIP, O_WIN, O_HOP, O_ERSEL, O_DUMP, O_LRSTEP, O_LRGAMMA, O_KDL, O_BFQ, O_THREADS,
	       O_BW, O_BA, O_BINL, O_EDGES, O_ACTB, O_STE, O_MEANT, O_WCEN, O_CORDER, O_ORDERS, O_OPENSET, O_URATE, O_NOVELTY };
	static const struct option lo[] = {
		{"data", 1, 0, 'd'}, {"quant", 1, 0, 'q'}, {"method", 1, 0, 'm'},
		{"bits", 1, 0, 'b'}, {"acc-bits", 1, 0, O_ACC}, {"tile", 1, 0, 't'},
		{"init-classes", 1, 0, O_INIT}, {"increment", 1, 0, O_INC},
		{"memory", 1, 0, 'M'}, {"epochs", 1, 0, 'e'}, {"hidden", 1, 0, 'H'},
		{"seeds", 1, 0, 's'}, {"jobs", 1, 0, 'j'}, {"json", 0, 0, 'J'},
		{"threads", 1, 0, O_THREADS},
		{"plot", 1, 0, 'p'}, {"lr", 1, 0, 'l'}, {"lr-step", 1, 0, O_LRSTEP},
		{"lr-gamma", 1, 0, O_LRGAMMA}, {"kd-lambda", 1, 0, O_KDL}, {"drop-classes", 1, 0, O_DROP},
		{"fwd-hadamard", 1, 0, O_FWDH}, {"fwd-gran", 1, 0, O_FWDG},
		{"bwd-gran", 1, 0, O_BWDG}, {"fwd-clip", 1, 0, O_FWDC},
		{"fwd-sigma", 1, 0, O_FWDS}, {"bwd-tile", 1, 0, O_BWDT},
		{"had-max", 1, 0, O_HADM}, {"bwd-fwdq", 1, 0, O_BFQ}, {"norm-clip", 1, 0, O_NCLIP},
		{"window", 1, 0, O_WIN}, {"hop", 1, 0, O_HOP}, {"er-selection", 1, 0, O_ERSEL},
		{"dump-features", 1, 0, O_DUMP}, {"beta-w", 1, 0, O_BW}, {"beta-a", 1, 0, O_BA},
		{"bin-layers", 1, 0, O_BINL}, {"edges", 1, 0, O_EDGES}, {"act-bin", 1, 0, O_ACTB},
		{"ste-clip", 1, 0, O_STE}, {"mean-term", 1, 0, O_MEANT}, {"w-centre", 1, 0, O_WCEN},
		{"class-order", 1, 0, O_CORDER}, {"orders", 1, 0, O_ORDERS},
		{"open-set", 1, 0, O_OPENSET}, {"unknown-rate", 1, 0, O_URATE}, {"novelty", 1, 0, O_NOVELTY},
		{"help", 0, 0, 'h'}, {0, 0, 0, 0}};
	int c, li = 0;
	while ((c = getopt_long(argc, argv, "", lo, &li)) != -1) {
		int bad = 0;
		char buf[256];
		switch (c) {
		case 'd': o->data = optarg; break;
		case 'q':
			o->n_modes = 0;
			snprintf(buf, sizeof(buf), "%s", optarg);
			for (char *sv, *t = strtok_r(buf, ",", &sv); t && !bad; t = strtok_r(NULL, ",", &sv))
				bad = o->n_modes == HDQT_MODE_COUNT || hdqt_mode_parse(t, &o->modes[o->n_modes++]) < 0;
			bad |= o->n_modes == 0;
			break;
		case 'm':
			o->n_methods = 0;
			snprintf(buf, sizeof(buf), "%s", optarg);
			for (char *sv, *t = strtok_r(buf, ",", &sv); t && !bad; t = strtok_r(NULL, ",", &sv))
				bad = o->n_methods == HDQT_CL_COUNT ||
				      hdqt_cl_method_parse(t, &o->methods[o->n_methods++]) < 0;
			bad |= o->n_methods == 0;
			break;
		case 'b': bad = parse_int(optarg, 2, 8, &o->bits); break;
		case O_ACC: bad = parse_int(optarg, 8, 24, &o->acc_bits); break;
		case 't': bad = parse_int(optarg, 1, 65536, &o->tile); break;
		case O_INIT: bad = parse_int(optarg, 1, 1000, &o->init_classes); break;
		case O_INC: bad = parse_int(optarg, 1, 1000, &o->increment); break;
		case 'M': bad = parse_int(optarg, 0, 1000000, &o->memory); break;
		case 'e': bad = parse_int(optarg, 1, 100000, &o->epochs); break;
		case 's': bad = parse_int(optarg, 1, 16, &o->seeds); break;
		case 'j': bad = parse_int(optarg, 1, 256, &o->jobs); break;
		case O_THREADS: bad = parse_int(optarg, 1, 64, &o->threads); break;
		case 'J': o->json = 1; break;
		case 'p': o->plot = optarg; break;
		case 'l': bad = parse_float(optarg, 0.0f, 10.0f, &o->lr); break;
		case O_LRSTEP: bad = parse_int(optarg, 0, 100000, &o->lr_step); break;
		case O_LRGAMMA: bad = parse_float(optarg, 0.0f, 1.0f, &o->lr_gamma); break;
		case O_KDL: bad = parse_float(optarg, 0.0f, 100.0f, &o->kd_lambda); break;
		case 'H':
			o->n_hidden = parse_list_int(optarg, o->hidden, HDQT_MAX_LAYERS - 1, 1, HDQT_MAX_DIM);
			bad = o->n_hidden < 0;
			break;
		case O_DROP:
			o->drop_set = 1;
			o->n_drop = strcmp(optarg, "none") == 0 ? 0 : parse_list_int(optarg, o->drop, 64, -1000000, 1000000);
			bad = o->n_drop < 0;
			break;
		case O_FWDH: bad = parse_int(optarg, 0, 1, &o->fwd_had); break;
		case O_FWDG:
		case O_BWDG: {
			int g = strcmp(optarg, "tensor") == 0 ? 0 : strcmp(optarg, "row") == 0 ? 1 : -1;
			bad = g < 0;
			if (c == O_FWDG)
				o->fwd_gran = g;
			else
				o->bwd_gran = g;
			break;
		}
		case O_FWDC: bad = parse_float(optarg, 0.01f, 1.0f, &o->fwd_clip); break;
		case O_FWDS: bad = parse_float(optarg, 0.0f, 100.0f, &o->fwd_sigma); break;
		case O_BWDT: bad = parse_int(optarg, 0, 65536, &o->bwd_tile); break;
		case O_BFQ: bad = parse_int(optarg, 0, 1, &o->bwd_fwdq); break;
		case O_HADM: bad = parse_int(optarg, 1, 65536, &o->had_max); bad |= !bad && (o->had_max & (o->had_max - 1)); break;
		case O_NCLIP: bad = parse_float(optarg, 0.0f, 1000.0f, &o->norm_clip); break;
		case O_WIN: bad = parse_int(optarg, 16, 4096, &o->window); bad |= !bad && (o->window & 1); break;
		case O_HOP: bad = parse_int(optarg, 1, 4096, &o->hop); break;
		case O_ERSEL:
			o->er_reservoir = strcmp(optarg, "reservoir") == 0;
			bad = !o->er_reservoir && strcmp(optarg, "random") != 0;
			break;
		case O_DUMP: o->dump = optarg; break;
		case O_BW: bad = parse_int(optarg, 0, HDQT_MAX_DIM, &o->beta_w); break;
		case O_BA: bad = parse_int(optarg, 0, HDQT_MAX_DIM, &o->beta_a); break;
		case O_BINL:
			o->bin_layers = strcmp(optarg, "inner") == 0 ? HDQT_BIN_INNER
					: strcmp(optarg, "all") == 0 ? HDQT_BIN_ALL : -1;
			bad = o->bin_layers < 0;
			break;
		case O_EDGES:
			o->edges = strcmp(optarg, "fp32") == 0 ? HDQT_MODE_FP32
				   : strcmp(optarg, "hdqt") == 0 ? HDQT_MODE_HDQT : -1;
			bad = o->edges < 0;
			break;
		case O_ACTB:
			o->act_bin = strcmp(optarg, "sign") == 0 ? HDQT_ACT_SIGN
				     : strcmp(optarg, "mask") == 0 ? HDQT_ACT_MASK
				     : strcmp(optarg, "centre") == 0 ? HDQT_ACT_CENTRE : -1;
			bad = o->act_bin < 0;
			break;
		case O_STE: bad = parse_float(optarg, 0.0f, 1000.0f, &o->ste_clip); break;
		case O_MEANT: bad = parse_int(optarg, 0, 1, &o->mean_term); break;
		case O_WCEN: bad = parse_int(optarg, 0, 1, &o->w_centre); break;
		case O_CORDER:
			if (strcmp(optarg, "random") == 0) {
				o->order_kind = 2;
			} else {
				o->order_kind = 1;
				o->n_order_list = parse_order_list(optarg, o->order_list);
				bad = o->n_order_list < 0;
			}
			break;
		case O_ORDERS: bad = parse_int(optarg, 1, MAX_ORDERS, &o->orders); break;
		case O_OPENSET: bad = parse_int(optarg, 1, HDQT_MAX_CLASSES - 1, &o->open_set); break;
		case O_URATE: bad = parse_float(optarg, 0.001f, 0.5f, &o->unknown_rate); break;
		case O_NOVELTY: {
			hdqt_novelty_kind k;
			bad = hdqt_novelty_kind_parse(optarg, &k) < 0;
			o->novelty_kind = (int)k;
			break;
		}
		case 'h': usage(stdout); exit(0);
		default: usage(stderr); return -1;
		}
		if (bad) {
			fprintf(stderr, "hdqt-eval: invalid value '%s' for --%s (see --help)\n", optarg, lo[li].name);
			return -1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "hdqt-eval: unexpected argument '%s'\n", argv[optind]);
		return -1;
	}
	if (o->order_kind == 1 && o->orders > 1) {
		fprintf(stderr, "hdqt-eval: --orders %d needs --class-order random (a LIST is one order)\n",
			o->orders);
		return -1;
	}
	if (o->order_kind == 0 && o->orders > 1)
		o->order_kind = 2; /* several orders can only be random ones */
	for (int i = 0; i < o->n_order_list; i++)
		for (int j = 0; j < i; j++)
			if (o->order_list[i] == o->order_list[j]) {
				fprintf(stderr, "hdqt-eval: --class-order: label %d appears twice\n",
					o->order_list[i]);
				return -1;
			}
	const long runs = (long)o->n_modes * o->n_methods * o->seeds * o->orders;
	if (runs > MAX_RUNS) {
		fprintf(stderr, "hdqt-eval: %ld runs (%d recipes x %d methods x %d seeds x %d orders) "
			"exceed the limit of %d\n", runs, o->n_modes, o->n_methods, o->seeds, o->orders,
			MAX_RUNS);
		return -1;
	}
	/* A recipe the knobs make inconsistent (segments that do not nest) is a
	 * usage error, said before any run starts. */
	for (int i = 0; i < o->n_modes; i++) {
		hdqt_qconfig q;
		make_qconfig(o, o->modes[i], &q);
		if (hdqt_qconfig_check(&q) < 0) {
			fprintf(stderr, "hdqt-eval: the options make recipe %s invalid (beta_w and beta_a "
				"must nest: one a multiple of the other, or 0)\n", hdqt_mode_name(o->modes[i]));
			return -1;
		}
	}
	if (!o->data) {
		fprintf(stderr, "hdqt-eval: --data DIR|CSV is required\n");
		usage(stderr);
		return -1;
	}
	return 0;
}

static void make_qconfig(const opts *o, hdqt_mode mode, hdqt_qconfig *q)
{
	hdqt_qconfig_default(q, mode);
	q->bits = o->bits;
	q->acc_bits = o->acc_bits;
	if (o->tile > 0)
		q->tile = o->tile;
	if (o->bwd_fwdq >= 0)
		q->bwd_fwdq = o->bwd_fwdq;
	if (hdqt_mode_is_hadanet(mode)) {
		if (o->beta_w >= 0) q->beta_w = o->beta_w;
		if (o->beta_a >= 0) q->beta_a = o->beta_a;
		if (o->bin_layers >= 0) q->bin_layers = (hdqt_bin_layers)o->bin_layers;
		if (o->edges >= 0) q->edges = (hdqt_mode)o->edges;
		if (o->act_bin >= 0) q->act_bin = (hdqt_act_bin)o->act_bin;
		if (o->ste_clip >= 0) q->ste_clip = o->ste_clip;
		if (o->mean_term >= 0) q->mean_term = o->mean_term;
		if (o->w_centre >= 0) q->w_centre = o->w_centre;
	}
	if (mode != HDQT_MODE_HDQT)
		return;
	if (o->fwd_had >= 0) q->fwd_hadamard = o->fwd_had;
	if (o->fwd_gran >= 0) q->fwd_gran = (hdqt_scale_gran)o->fwd_gran;
	if (o->bwd_gran >= 0) q->bwd_gran = (hdqt_scale_gran)o->bwd_gran;
	if (o->fwd_clip > 0) q->fwd_clip = o->fwd_clip;
	if (o->fwd_sigma >= 0) q->fwd_clip_sigma = o->fwd_sigma;
	if (o->bwd_tile >= 0) q->bwd_tile = o->bwd_tile;
	if (o->had_max > 0) q->had_max = o->had_max;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int progress(void *arg, int epoch, int epochs, float loss)
{
	shared *sh = arg;
	(void)epochs;
	(void)loss;
	(void)epoch;
	pthread_mutex_lock(&sh->mu);
	sh->done_epochs++;
	if (sh->tty && sh->total_epochs > 0) {
		int w = 40, f = (int)((long)w * sh->done_epochs / sh->total_epochs);
		fprintf(stderr, "\r[%.*s%*s] %3d%%", f, "########################################", w - f, "",
			100 * sh->done_epochs / sh->total_epochs);
		fflush(stderr);
	}
	pthread_mutex_unlock(&sh->mu);
	return 0;
}

static double accuracy(const int *pred, const int *y, int n, int c0, int c1)
{
	int ok = 0, tot = 0;
	for (int i = 0; i < n; i++)
		if (y[i] >= c0 && y[i] < c1) {
			tot++;
			ok += pred[i] == y[i];
		}
	return tot ? 100.0 * ok / tot : 0.0;
}

/* Macro- and micro-F1 (%) of n predictions of classes [0, C) against y:
 * macro the mean over the classes that occur in y or pred of
 * 2 TP / (2 TP + FP + FN), micro the same over the pooled counts.  With
 * every prediction among the C seen classes, micro-F1 equals accuracy;
 * it is reported because protocols quote it. */
static void f1_scores(const int *pred, const int *y, int n, int C, double *macro, double *micro)
{
	int tp[HDQT_MAX_CLASSES] = {0}, fp[HDQT_MAX_CLASSES] = {0}, fn[HDQT_MAX_CLASSES] = {0};
	C = C < HDQT_MAX_CLASSES ? C : HDQT_MAX_CLASSES;
	for (int i = 0; i < n; i++) {
		if (y[i] < 0 || y[i] >= C)
			continue;
		if (pred[i] == y[i]) {
			tp[y[i]]++;
		} else {
			fn[y[i]]++;
			if (pred[i] >= 0 && pred[i] < C)
				fp[pred[i]]++;
		}
	}
	double sum = 0;
	long TP = 0, FP = 0, FN = 0;
	int k = 0;
	for (int c = 0; c < C; c++) {
		TP += tp[c];
		FP += fp[c];
		FN += fn[c];
		if (tp[c] + fp[c] + fn[c] == 0)
			continue;
		sum += 2.0 * tp[c] / (2.0 * tp[c] + fp[c] + fn[c]);
		k++;
	}
	*macro = k ? 100.0 * sum / k : NAN;
	*micro = TP + FP + FN ? 100.0 * 2.0 * TP / (2.0 * TP + FP + FN) : NAN;
}

/* Mean and standard deviation of each feature over the training rows
 * whose run label (y) is below `known`, as prepare() computes them over all. */
static int known_stats(const shared *sh, const int *y, int known, float *mean, float *std)
{
	const int d = sh->train.d;
	long n = 0;
	for (int i = 0; i < sh->train.n; i++)
		n += y[i] < known;
	if (n == 0)
		return HDQT_EINVAL;
	for (int j = 0; j < d; j++) {
		double s = 0, ss = 0;
		for (int i = 0; i < sh->train.n; i++)
			if (y[i] < known)
				s += sh->train.X[(size_t)i * d + j];
		const double mu = s / n;
		for (int i = 0; i < sh->train.n; i++)
			if (y[i] < known) {
				const double e = sh->train.X[(size_t)i * d + j] - mu;
				ss += e * e;
			}
		mean[j] = (float)mu;
		std[j] = ss > 1e-12 * n ? (float)sqrt(ss / n) : 1.0f;
	}
	return 0;
}

/* After the last task: calibrate each novelty score on the calibration
 * users' windows of the known classes, then score every test window;
 * unseen ones (arrival position past the last task) should score high. */
static int open_set_eval(shared *sh, run_result *r, hdqt_cl *cl, const int *rank)
{
	const opts *o = sh->o;
	const int Ck = sh->task_end[sh->n_tasks - 1], d = sh->train.d;
	hdqt_model *m = hdqt_cl_model(cl);
	float *V = malloc(sizeof(float) * (size_t)sh->calib.n * d);
	float *sc = malloc(sizeof(float) * (size_t)sh->test.n);
	float *pos = malloc(sizeof(float) * (size_t)sh->test.n), *neg = malloc(sizeof(float) * (size_t)sh->test.n);
	int *unk = malloc(sizeof(int) * (size_t)sh->test.n);
	int rc = V && sc && pos && neg && unk ? 0 : HDQT_ENOMEM, nv = 0;
	for (int i = 0; rc == 0 && i < sh->calib.n; i++)
		if (rank[sh->calib.y[i]] < Ck)
			memcpy(V + (size_t)nv++ * d, sh->calib.X + (size_t)i * d, sizeof(float) * d);
	for (int k = 0; rc == 0 && nv > 0 && k < HDQT_NOVELTY_COUNT; k++) {
		hdqt_novelty *nov = NULL;
		int frc = hdqt_novelty_fit(&nov, m, hdqt_cl_memory(cl), Ck, V, nv, (hdqt_novelty_kind)k,
					   o->unknown_rate);
		if (frc == HDQT_ESTATE)
			continue; /* NME without exemplars (LwF, fine-tuning) */
		if (frc == 0)
			frc = hdqt_novelty_score(nov, m, sh->test.X, sh->test.n, NULL, sc, unk);
		hdqt_novelty_free(nov);
		if ((rc = frc) < 0)
			break;
		int np = 0, nn = 0, up = 0, un = 0;
		for (int i = 0; i < sh->test.n; i++) {
			if (rank[sh->test.y[i]] >= Ck) {
				pos[np++] = sc[i];
				up += unk[i];
			} else {
				neg[nn++] = sc[i];
				un += unk[i];
			}
		}
		r->os[k][0] = hdqt_auroc(pos, np, neg, nn);
		r->os[k][1] = nn ? (double)un / nn : NAN;
		r->os[k][2] = np ? (double)up / np : NAN;
	}
	free(V);
	free(sc);
	free(pos);
	free(neg);
	free(unk);
	return rc;
}

static void do_run(shared *sh, run_result *r)
{
	const opts *o = sh->o;
	hdqt_qconfig q;
	make_qconfig(o, r->mode, &q);
	hdqt_mlp_config mc = {.n_in = sh->train.d, .n_hidden = o->n_hidden,
			      .n_classes = sh->task_end[0]};
	memcpy(mc.hidden, o->hidden, sizeof(mc.hidden));
	hdqt_model *m = NULL;
	hdqt_cl *cl = NULL;
	int *pred = malloc(sizeof(int) * (size_t)sh->test.n);
	int *tpred = malloc(sizeof(int) * (size_t)sh->test.n);
	float *X = malloc(sizeof(float) * (size_t)sh->train.n * sh->train.d);
	int *y = malloc(sizeof(int) * (size_t)sh->train.n);
	float *tX = malloc(sizeof(float) * (size_t)sh->test.n * sh->test.d);
	int *ty = malloc(sizeof(int) * (size_t)sh->test.n);
	/* This run's labels: arrival positions under its class order. */
	const int *rank = sh->rank[r->order];
	int *try_ = malloc(sizeof(int) * (size_t)sh->train.n);
	int *tey = malloc(sizeof(int) * (size_t)sh->test.n);
	double *best = malloc(sizeof(double) * (size_t)sh->C);
	r->class_forget = malloc(sizeof(double) * (size_t)sh->C);
	int rc = (pred && tpred && X && y && tX && ty && try_ && tey && best && r->class_forget) ? 0
												: HDQT_ENOMEM;
	for (int i = 0; rc == 0 && i < sh->train.n; i++)
		try_[i] = rank[sh->train.y[i]];
	for (int i = 0; rc == 0 && i < sh->test.n; i++)
		tey[i] = rank[sh->test.y[i]];
	for (int c = 0; rc == 0 && c < sh->C; c++)
		best[c] = r->class_forget[c] = NAN;
	if (rc == 0)
		rc = hdqt_model_new(&m, &mc, &q, (uint64_t)r->seed * 1000003u);
	if (rc == 0 && o->open_set) {
		/* The standardisation may not have seen the classes this run
		 * never announces: statistics of its known classes' rows only. */
		float *mu = calloc((size_t)sh->train.d, sizeof(float)), *sd = calloc((size_t)sh->train.d, sizeof(float));
		rc = mu && sd ? known_stats(sh, try_, sh->task_end[sh->n_tasks - 1], mu, sd) : HDQT_ENOMEM;
		if (rc == 0)
			rc = hdqt_model_set_norm(m, mu, sd, o->norm_clip);
		free(mu);
		free(sd);
	} else if (rc == 0) {
		rc = hdqt_model_set_norm(m, sh->mean, sh->std, o->norm_clip);
	}
	if (rc == 0)
		rc = hdqt_model_set_threads(m, o->threads);
	hdqt_cl_config cc;
	hdqt_cl_config_default(&cc);
	cc.method = r->method;
	cc.memory = o->memory;
	cc.epochs = o->epochs;
	cc.sgd.lr = o->lr;
	cc.sgd.step_every = o->lr_step;
	cc.sgd.step_gamma = o->lr_gamma;
	cc.kd_lambda = o->kd_lambda;
	cc.seed = (uint64_t)r->seed;
	cc.er_reservoir = o->er_reservoir;
	if (rc == 0 && (rc = hdqt_cl_new(&cl, m, &cc)) < 0)
		hdqt_model_free(m);
	double sps_sum = 0;
	const int d = sh->train.d;
	for (int t = 0; rc == 0 && t < sh->n_tasks; t++) {
		int c0 = t ? sh->task_end[t - 1] : 0, c1 = sh->task_end[t];
		int n = 0, tn = 0;
		for (int i = 0; i < sh->train.n; i++)
			if (try_[i] >= c0 && try_[i] < c1) {
				memcpy(X + (size_t)n * d, sh->train.X + (size_t)i * d, sizeof(float) * d);
				y[n++] = try_[i];
			}
		for (int i = 0; i < sh->test.n; i++)
			if (tey[i] < c1) {
				memcpy(tX + (size_t)tn * d, sh->test.X + (size_t)i * d, sizeof(float) * d);
				ty[tn++] = tey[i];
			}
		if (!r->diverged_task) {
			rc = hdqt_cl_learn(cl, X, y, n, c1, progress, sh);
			if (rc == HDQT_ERANGE) {
				/* The recipe diverged (non-finite loss).  Report it and
				 * keep evaluating the model it left behind, frozen, so the
				 * run's accuracies say what a device would have served. */
				r->diverged_task = t + 1;
				rc = 0;
			} else if (rc < 0) {
				break;
			} else {
				sps_sum += hdqt_cl_samples_per_s(cl);
			}
		}
		if ((rc = hdqt_model_predict(hdqt_cl_model(cl), tX, tn, pred)) < 0)
			break;
		r->seen[t] = c1;
		r->acc[t] = accuracy(pred, ty, tn, 0, c1);
		for (int j = 0; j <= t; j++)
			r->task_acc[t][j] = accuracy(pred, ty, tn, j ? sh->task_end[j - 1] : 0, sh->task_end[j]);
		f1_scores(pred, ty, tn, c1, &r->f1_macro[t], &r->f1_micro[t]);
		/* Forgetting per class: its best accuracy before the last task
		 * minus its accuracy after it (classes of the last task have none). */
		for (int s = 0; s < sh->C; s++) {
			const int a = rank[s];
			if (a >= c1)
				continue;
			int have = 0;
			for (int i = 0; i < tn && !have; i++)
				have = ty[i] == a;
			if (!have)
				continue; /* no test sample of this class: no figure */
			const double acc = accuracy(pred, ty, tn, a, a + 1);
			if (t < sh->n_tasks - 1)
				best[s] = isnan(best[s]) || acc > best[s] ? acc : best[s];
			else if (!isnan(best[s]))
				r->class_forget[s] = best[s] - acc;
		}
		r->nme[t] = NAN;
		if (r->method == HDQT_CL_ICARL || r->method == HDQT_CL_ER) {
			if (hdqt_cl_predict_nme(cl, tX, tn, tpred) == 0)
				r->nme[t] = accuracy(tpred, ty, tn, 0, c1);
		}
		r->n_tasks = t + 1;
	}
	for (int k = 0; k < HDQT_NOVELTY_COUNT; k++)
		r->os[k][0] = r->os[k][1] = r->os[k][2] = NAN;
	if (rc == 0 && o->open_set)
		rc = open_set_eval(sh, r, cl, rank);
	/* What binarisation does to the binarised layers' inputs, on the
	 * training users (nothing here is chosen on the test users). */
	if (rc == 0 && hdqt_mode_is_hadanet(r->mode))
		rc = hdqt_model_bin_stats(hdqt_cl_model(cl), sh->train.X, sh->train.n, r->bst);
	int trained_tasks = r->diverged_task ? r->diverged_task - 1 : r->n_tasks;
	r->sps = trained_tasks ? sps_sum / trained_tasks : 0;
	r->rc = rc;
	if (cl)
		hdqt_cl_free(cl);
	free(pred);
	free(tpred);
	free(X);
	free(y);
	free(tX);
	free(ty);
	free(try_);
	free(tey);
	free(best);
}

static void *worker(void *arg)
{
	shared *sh = arg;
	for (;;) {
		pthread_mutex_lock(&sh->mu);
		int i = sh->next < sh->n_runs ? sh->next++ : -1;
		pthread_mutex_unlock(&sh->mu);
		if (i < 0)
			return NULL;
		do_run(sh, &sh->runs[i]);
	}
}

static int cmp_int(const void *a, const void *b)
{
	return (*(const int *)a > *(const int *)b) - (*(const int *)a < *(const int *)b);
}

/* Load, split by user, drop classes, map labels to arrival order, standardise. */
static int prepare(shared *sh, const opts *o)
{
	hdqt_dataset ds;
	struct stat st;
	if (stat(o->data, &st) != 0) {
		fprintf(stderr, "hdqt-eval: %s: %s\n", o->data, strerror(errno));
		return HDQT_EIO;
	}
	int is_dir = S_ISDIR(st.st_mode);
	int rc = is_dir ? hdqt_hapt_load(o->data, o->window, o->hop, &ds) : hdqt_csv_load(o->data, &ds);
	if (rc < 0) {
		fprintf(stderr, "hdqt-eval: cannot load %s: %s\n", o->data, hdqt_strerror(rc));
		return rc;
	}
	if (o->dump) {
		FILE *f = fopen(o->dump, "w");
		if (!f) {
			fprintf(stderr, "hdqt-eval: cannot write %s\n", o->dump);
			hdqt_dataset_free(&ds);
			return HDQT_EIO;
		}
		fprintf(f, "label,user");
		for (int j = 0; j < ds.d; j++) {
			char nm[64];
			if (ds.d == HDQT_FEAT_DIM && is_dir)
				fprintf(f, ",%s", hdqt_feat_name(j, nm, sizeof(nm)));
			else
				fprintf(f, ",f%d", j);
		}
		fprintf(f, "\n");
		for (int i = 0; i < ds.n; i++) {
			fprintf(f, "%d,%d", ds.y[i], ds.user[i]);
			for (int j = 0; j < ds.d; j++)
				fprintf(f, ",%.9g", ds.X[(size_t)i * ds.d + j]);
			fprintf(f, "\n");
		}
		int bad = ferror(f);
		bad |= fclose(f) != 0;
		hdqt_dataset_free(&ds);
		if (bad) {
			fprintf(stderr, "hdqt-eval: error writing %s\n", o->dump);
			return HDQT_EIO;
		}
		fprintf(stderr, "hdqt-eval: wrote %s\n", o->dump);
		return 1; /* done: nothing to train */
	}
	int drop[64], n_drop = o->n_drop;
	memcpy(drop, o->drop, sizeof(drop));
	if (!o->drop_set && is_dir) {
		drop[0] = 8; /* SIT_TO_STAND: 33 windows in all, left out as in the paper */
		n_drop = 1;
	}
	int labels[HDQT_MAX_CLASSES], nl = 0;
	for (int i = 0; i < ds.n; i++) {
		int keep = 1;
		for (int k = 0; k < n_drop; k++)
			keep &= ds.y[i] != drop[k];
		int seen = 0;
		for (int k = 0; keep && k < nl; k++)
			seen |= labels[k] == ds.y[i];
		if (keep && !seen) {
			if (nl == HDQT_MAX_CLASSES) {
				hdqt_dataset_free(&ds);
				return HDQT_ERANGE;
			}
			labels[nl++] = ds.y[i];
		}
	}
	qsort(labels, (size_t)nl, sizeof(int), cmp_int);
	sh->C = nl;
	memcpy(sh->class_ids, labels, sizeof(int) * nl);
	split *sp[3] = {&sh->train, &sh->test, &sh->calib};
	/* --open-set: every 7th training user (in id order, from the first)
	 * is kept for calibration: thresholds set on windows of users the
	 * model was trained on would be too tight for anyone else. */
	int users[256], nu = 0;
	for (int i = 0; o->open_set && i < ds.n; i++) {
		int seen = hdqt_hapt_is_test_user(ds.user[i]);
		for (int k = 0; !seen && k < nu; k++)
			seen = users[k] == ds.user[i];
		if (!seen && nu < 256)
			users[nu++] = ds.user[i];
	}
	qsort(users, (size_t)nu, sizeof(int), cmp_int);
	for (int s = 0; s < 3; s++) {
		sp[s]->d = ds.d;
		sp[s]->X = malloc(sizeof(float) * (size_t)ds.n * ds.d);
		sp[s]->y = malloc(sizeof(int) * (size_t)ds.n);
		if (!sp[s]->X || !sp[s]->y)
			return HDQT_ENOMEM;
	}
	for (int i = 0; i < ds.n; i++) {
		int c = -1;
		for (int k = 0; k < nl; k++)
			if (labels[k] == ds.y[i])
				c = k;
		if (c < 0)
			continue;
		split *t = hdqt_hapt_is_test_user(ds.user[i]) ? &sh->test : &sh->train;
		for (int k = 0; t == &sh->train && k < nu; k += 7)
			if (users[k] == ds.user[i])
				t = &sh->calib;
		memcpy(t->X + (size_t)t->n * ds.d, ds.X + (size_t)i * ds.d, sizeof(float) * ds.d);
		t->y[t->n++] = c;
	}
	hdqt_dataset_free(&ds);
	if (sh->train.n == 0 || sh->test.n == 0 || nl < 1) {
		fprintf(stderr, "hdqt-eval: %s has no train or no test samples after the split\n", o->data);
		return HDQT_EFORMAT;
	}
	if (o->open_set && (o->open_set >= nl || sh->calib.n == 0)) {
		fprintf(stderr, "hdqt-eval: --open-set %d needs at least one known class (there are %d) and "
			"calibration users (%d windows)\n", o->open_set, nl, sh->calib.n);
		return HDQT_EINVAL;
	}
	/* Standardisation statistics of the training split (stored in each model). */
	const int d = sh->train.d;
	sh->mean = calloc((size_t)d, sizeof(float));
	sh->std = calloc((size_t)d, sizeof(float));
	if (!sh->mean || !sh->std)
		return HDQT_ENOMEM;
	for (int j = 0; j < d; j++) {
		double s = 0, ss = 0;
		for (int i = 0; i < sh->train.n; i++)
			s += sh->train.X[(size_t)i * d + j];
		double mu = s / sh->train.n;
		for (int i = 0; i < sh->train.n; i++) {
			double e = sh->train.X[(size_t)i * d + j] - mu;
			ss += e * e;
		}
		sh->mean[j] = (float)mu;
		sh->std[j] = ss > 1e-12 * sh->train.n ? (float)sqrt(ss / sh->train.n) : 1.0f;
	}
	const int known = nl - o->open_set; /* the tasks cover the announced classes */
	int end = o->init_classes < known ? o->init_classes : known;
	sh->n_tasks = 0;
	while (sh->n_tasks < MAX_TASKS) {
		sh->task_end[sh->n_tasks++] = end;
		if (end >= known)
			break;
		end = end + o->increment < known ? end + o->increment : known;
	}
	return 0;
}

/* The class orders: sorted labels, the --class-order LIST (checked here,
 * once the labels are known: every class exactly once), or K random
 * permutations, order k drawn from its own stream (seed 1993 + k, PyCIL's
 * shuffle seed), so the same k gives the same order on every run.  -1 on
 * a usage error (said on stderr). */
static int setup_orders(shared *sh, const opts *o)
{
	const int C = sh->C;
	sh->n_orders = o->order_kind == 2 ? o->orders : 1;
	for (int k = 0; k < sh->n_orders; k++) {
		int *ids = sh->order_ids[k];
		memcpy(ids, sh->class_ids, sizeof(int) * (size_t)C);
		if (o->order_kind == 1) {
			for (int i = 0; i < o->n_order_list; i++) {
				int found = 0;
				for (int c = 0; c < C; c++)
					found |= sh->class_ids[c] == o->order_list[i];
				if (!found) {
					fprintf(stderr, "hdqt-eval: --class-order: label %d is not a class of %s "
						"(dropped, or absent)\n", o->order_list[i], o->data);
					return -1;
				}
			}
			for (int c = 0; c < C; c++) {
				int found = 0;
				for (int i = 0; i < o->n_order_list; i++)
					found |= sh->class_ids[c] == o->order_list[i];
				if (!found) {
					fprintf(stderr, "hdqt-eval: --class-order: class %d is missing (the list "
						"must name each of the %d classes once)\n", sh->class_ids[c], C);
					return -1;
				}
			}
			memcpy(ids, o->order_list, sizeof(int) * (size_t)C);
		} else if (o->order_kind == 2) {
			hdqt_rng rg;
			hdqt_rng_seed(&rg, 1993u + (uint64_t)k, 11);
			for (int i = C - 1; i > 0; i--) {
				int j = (int)hdqt_rng_below(&rg, (uint32_t)(i + 1));
				int t = ids[i];
				ids[i] = ids[j];
				ids[j] = t;
			}
		}
		for (int a = 0; a < C; a++)
			for (int c = 0; c < C; c++)
				if (sh->class_ids[c] == ids[a])
					sh->rank[k][c] = a;
	}
	return 0;
}

typedef struct agg { double mean, std; } agg;

static agg aggregate(const double *v, int n)
{
	agg a = {0, 0};
	int k = 0;
	for (int i = 0; i < n; i++)
		if (!isnan(v[i])) {
			a.mean += v[i];
			k++;
		}
	if (!k)
		return (agg){NAN, NAN};
	a.mean /= k;
	for (int i = 0; i < n; i++)
		if (!isnan(v[i]))
			a.std += (v[i] - a.mean) * (v[i] - a.mean);
	a.std = k > 1 ? sqrt(a.std / (k - 1)) : 0.0;
	return a;
}

static void json_agg(const char *key, agg a, int comma)
{
	if (isnan(a.mean))
		printf("\"%s\": null%s", key, comma ? ", " : "");
	else
		printf("\"%s\": {\"mean\": %.3f, \"std\": %.3f}%s", key, a.mean, a.std, comma ? ", " : "");
}

/* Per (mode, method) group: the metrics over seeds and class orders. */
typedef struct group {
	hdqt_mode mode;
	hdqt_cl_method method;
	run_result *r[MAX_RUNS];
	int n;
	agg aia, aia_nme, last, last_nme, forget, task[MAX_TASKS], task_nme[MAX_TASKS];
	agg f1_macro[MAX_TASKS], f1_micro[MAX_TASKS];
	agg class_forget[HDQT_MAX_CLASSES]; /* by sorted class index */
	agg os[HDQT_NOVELTY_COUNT][3];      /* --open-set: auroc, unknown rate known / unseen */
	double sps;
	int diverged;
} group;

/* Storage bits per weight and per activation of the products, averaged
 * over the layers (weights by their count, activations by the layer's
 * inputs): fp32 32, the hdqt family its bits, a binarised layer
 * (beta + 32) / beta (one sign bit each, an fp32 delta per segment). */
static void model_bits(const opts *o, hdqt_mode mode, int n_in, int classes, double *bw, double *ba)
{
	hdqt_qconfig q;
	make_qconfig(o, mode, &q);
	const int L = o->n_hidden + 1;
	double wb = 0, wn = 0, ab = 0, an = 0;
	for (int l = 0; l < L; l++) {
		const int K = l == 0 ? n_in : o->hidden[l - 1], M = l == L - 1 ? classes : o->hidden[l];
		double bitw, bita;
		int binary = hdqt_mode_is_hadanet(mode) && (q.bin_layers == HDQT_BIN_ALL || (l > 0 && l < L - 1));
		if (binary) {
			const int gw = q.beta_w <= 0 || q.beta_w >= K ? K : q.beta_w;
			const int ga = q.beta_a <= 0 || q.beta_a >= K ? K : q.beta_a;
			bitw = gw == 1 ? 32 : (gw + 32.0) / gw;
			bita = ga == 1 ? 32 : (ga + 32.0) / ga;
		} else {
			hdqt_mode m = hdqt_mode_is_hadanet(mode) ? q.edges : mode;
			bitw = bita = m == HDQT_MODE_FP32 ? 32 : q.bits;
		}
		wb += bitw * K * M;
		wn += (double)K * M;
		ab += bita * K;
		an += K;
	}
	*bw = wb / wn;
	*ba = ab / an;
}

/* The open-set figures of g's runs, over them. */
static void open_set_aggregate(group *g)
{
	double v[MAX_RUNS];
	for (int k = 0; k < HDQT_NOVELTY_COUNT; k++)
		for (int f = 0; f < 3; f++) {
			for (int s = 0; s < g->n; s++)
				v[s] = g->r[s]->os[k][f];
			g->os[k][f] = aggregate(v, g->n);
		}
}

static void summarise(shared *sh, group *g)
{
	double aia[MAX_RUNS], aian[MAX_RUNS], last[MAX_RUNS], lastn[MAX_RUNS], fg[MAX_RUNS], sps = 0;
	for (int s = 0; s < g->n; s++) {
		run_result *r = g->r[s];
		double a = 0, an = 0;
		for (int t = 0; t < r->n_tasks; t++) {
			a += r->acc[t];
			an += r->nme[t];
		}
		aia[s] = a / r->n_tasks;
		aian[s] = an / r->n_tasks;
		last[s] = r->acc[r->n_tasks - 1];
		lastn[s] = r->nme[r->n_tasks - 1];
		/* Forgetting: mean over earlier tasks of (best accuracy before the
		 * last task) - (accuracy after it), on that task's classes. */
		int T = r->n_tasks;
		double f = 0;
		for (int j = 0; j < T - 1; j++) {
			double best = 0;
			for (int t = j; t < T - 1; t++)
				best = r->task_acc[t][j] > best ? r->task_acc[t][j] : best;
			f += best - r->task_acc[T - 1][j];
		}
		fg[s] = T > 1 ? f / (T - 1) : 0;
		sps += r->sps;
		g->diverged += r->diverged_task > 0;
	}
	g->aia = aggregate(aia, g->n);
	g->aia_nme = aggregate(aian, g->n);
	g->last = aggregate(last, g->n);
	g->last_nme = aggregate(lastn, g->n);
	g->forget = aggregate(fg, g->n);
	g->sps = sps / g->n;
	double v[MAX_RUNS], vn[MAX_RUNS], vf[MAX_RUNS];
	for (int t = 0; t < sh->n_tasks; t++) {
		for (int s = 0; s < g->n; s++) {
			v[s] = g->r[s]->acc[t];
			vn[s] = g->r[s]->nme[t];
			vf[s] = g->r[s]->f1_micro[t];
		}
		g->task[t] = aggregate(v, g->n);
		g->task_nme[t] = aggregate(vn, g->n);
		g->f1_micro[t] = aggregate(vf, g->n);
		for (int s = 0; s < g->n; s++)
			vf[s] = g->r[s]->f1_macro[t];
		g->f1_macro[t] = aggregate(vf, g->n);
	}
	for (int c = 0; c < sh->C; c++) {
		for (int s = 0; s < g->n; s++)
			v[s] = g->r[s]->class_forget[c];
		g->class_forget[c] = aggregate(v, g->n);
	}
	open_set_aggregate(g);
}

/* "auroc", "unknown_rate_known", "unknown_rate_unseen" of score k. */
static void json_open_set(const group *g, int k)
{
	static const char *const keys[3] = {"auroc", "unknown_rate_known", "unknown_rate_unseen"};
	for (int f = 0; f < 3; f++) {
		const agg a = g->os[k][f];
		if (isnan(a.mean))
			printf("\"%s\": null%s", keys[f], f < 2 ? ", " : "");
		else
			printf("\"%s\": {\"mean\": %.4f, \"std\": %.4f}%s", keys[f], a.mean, a.std,
			       f < 2 ? ", " : "");
	}
}

/* The fp32 group of the same method, the reference of the gaps; NULL if
 * fp32 did not run or g is fp32. */
static const group *fp32_ref(const group *gs, int ng, const group *g)
{
	if (g->mode == HDQT_MODE_FP32)
		return NULL;
	for (int k = 0; k < ng; k++)
		if (gs[k].mode == HDQT_MODE_FP32 && gs[k].method == g->method)
			return &gs[k];
	return NULL;
}

/* Layer l's binarisation statistics, averaged over the group's runs. */
static void bin_stats_mean(const group *g, int l, double *zero, double *cut, double err[3])
{
	*zero = *cut = err[0] = err[1] = err[2] = 0;
	for (int s = 0; s < g->n; s++) {
		const hdqt_bin_stats *b = &g->r[s]->bst[l];
		*zero += b->frac_zero / g->n;
		*cut += b->frac_cut / g->n;
		for (int k = 0; k < 3; k++)
			err[k] += b->rel_err[k] / g->n;
	}
}

static void print_json_group(shared *sh, group *g, const group *ref, double wall, long rss)
{
	hdqt_qconfig gq;
	make_qconfig(sh->o, g->mode, &gq);
	printf("{\"quant\": \"%s\", \"method\": \"%s\", \"bits\": %d, \"acc_bits\": %d, \"tile\": %d, \"bwd_tile\": %d, "
	       "\"kernel\": \"%s\", \"seeds\": %d, \"orders\": %d, \"epochs\": %d, \"memory\": %d, "
	       "\"classes\": %d, \"tasks\": [",
	       hdqt_mode_name(g->mode), hdqt_cl_method_name(g->method), sh->o->bits, sh->o->acc_bits,
	       g->mode == HDQT_MODE_FP32 ? 0 : gq.tile, g->mode == HDQT_MODE_FP32 ? 0 : gq.bwd_tile,
	       hdqt_kernel_name(), sh->o->seeds, sh->n_orders, sh->o->epochs, sh->o->memory, sh->C);
	/* seen_classes follow the first class order (class_orders has them all). */
	for (int t = 0; t < sh->n_tasks; t++) {
		printf("%s{\"seen_classes\": [", t ? ", " : "");
		for (int c = 0; c < sh->task_end[t]; c++)
			printf("%s%d", c ? ", " : "", sh->order_ids[0][c]);
		printf("], ");
		json_agg("accuracy", g->task[t], 1);
		json_agg("accuracy_nme", g->task_nme[t], 1);
		json_agg("f1_macro", g->f1_macro[t], 1);
		json_agg("f1_micro", g->f1_micro[t], 0);
		printf("}");
	}
	printf("], \"class_orders\": [");
	for (int k = 0; k < sh->n_orders; k++) {
		printf("%s[", k ? ", " : "");
		for (int c = 0; c < sh->C; c++)
			printf("%s%d", c ? ", " : "", sh->order_ids[k][c]);
		printf("]");
	}
	printf("], \"forgetting_per_class\": {");
	for (int c = 0; c < sh->C; c++) {
		char key[32];
		snprintf(key, sizeof(key), "%d", sh->class_ids[c]);
		json_agg(key, g->class_forget[c], c < sh->C - 1);
	}
	printf("}, ");
	if (sh->o->open_set) {
		printf("\"open_set\": {\"score\": \"%s\", \"unseen_classes\": %d, \"unknown_rate_target\": %.4f, "
		       "\"calibration_windows\": %d, ", hdqt_novelty_kind_name((hdqt_novelty_kind)sh->o->novelty_kind),
		       sh->o->open_set, sh->o->unknown_rate, sh->calib.n);
		json_open_set(g, sh->o->novelty_kind);
		printf(", \"by_score\": {");
		for (int k = 0; k < HDQT_NOVELTY_COUNT; k++) {
			printf("%s\"%s\": {", k ? ", " : "", hdqt_novelty_kind_name((hdqt_novelty_kind)k));
			json_open_set(g, k);
			printf("}");
		}
		/* Each split of known and unseen classes (a class order) alone,
		 * over the seeds: the spread above is mostly between splits. */
		printf("}, \"per_split\": [");
		for (int o = 0; o < sh->n_orders; o++) {
			group sub = {.mode = g->mode, .method = g->method};
			for (int s2 = 0; s2 < g->n; s2++)
				if (g->r[s2]->order == o)
					sub.r[sub.n++] = g->r[s2];
			open_set_aggregate(&sub);
			printf("%s{\"unseen\": [", o ? ", " : "");
			for (int c = sh->C - sh->o->open_set; c < sh->C; c++)
				printf("%s%d", c > sh->C - sh->o->open_set ? ", " : "", sh->order_ids[o][c]);
			printf("], ");
			json_open_set(&sub, sh->o->novelty_kind);
			printf("}");
		}
		printf("]}, ");
	}
	json_agg("avg_incremental_accuracy", g->aia, 1);
	json_agg("avg_incremental_accuracy_nme", g->aia_nme, 1);
	json_agg("last_accuracy", g->last, 1);
	json_agg("last_accuracy_nme", g->last_nme, 1);
	json_agg("forgetting", g->forget, 1);
	if (ref) {
		/* Differences of the means in percentage points (NaN, e.g. NME of
		 * LwF, is written as null). */
		double d = g->aia.mean - ref->aia.mean, dn = g->aia_nme.mean - ref->aia_nme.mean;
		printf("\"gap_to_fp32_pp\": {\"avg_incremental_accuracy\": ");
		printf(isnan(d) ? "null" : "%.3f", d);
		printf(", \"avg_incremental_accuracy_nme\": ");
		printf(isnan(dn) ? "null" : "%.3f", dn);
		printf("}, ");
	}
	printf("\"diverged_runs\": [");
	for (int s = 0, first = 1; s < g->n; s++)
		if (g->r[s]->diverged_task) {
			printf("%s{\"seed\": %d, \"task\": %d}", first ? "" : ", ", g->r[s]->seed, g->r[s]->diverged_task);
			first = 0;
		}
	printf("], ");
	double bw, ba;
	model_bits(sh->o, g->mode, sh->train.d, sh->C, &bw, &ba);
	printf("\"bits_per_weight\": %.3f, \"bits_per_activation\": %.3f, ", bw, ba);
	if (hdqt_mode_is_hadanet(g->mode)) {
		printf("\"beta_w\": %d, \"beta_a\": %d, \"binarised\": [", gq.beta_w, gq.beta_a);
		for (int l = 0, first = 1; l < HDQT_MAX_LAYERS; l++) {
			if (!g->r[0]->bst[l].binary)
				continue;
			double z, cut, e[3];
			bin_stats_mean(g, l, &z, &cut, e);
			printf("%s{\"layer\": %d, \"frac_zero\": %.4f, \"frac_ste_cut\": %.4f, "
			       "\"rel_err\": {\"sign\": %.4f, \"mask\": %.4f, \"centre\": %.4f}}",
			       first ? "" : ", ", l, z, cut, e[0], e[1], e[2]);
			first = 0;
		}
		printf("], ");
	}
	printf("\"train_samples_per_s\": %.0f, \"wall_s\": %.2f, \"peak_rss_kb\": %ld}", g->sps, wall, rss);
}

static void fmt_agg(char *b, size_t n, agg a)
{
	if (isnan(a.mean))
		snprintf(b, n, "%13s", "-");
	else
		snprintf(b, n, "%6.2f ± %4.2f", a.mean, a.std);
}

static void print_table(shared *sh, group *gs, int ng, double wall, long rss)
{
	printf("Class-incremental %s: %d classes, %d tasks, memory %d, %d epochs/task, %d-bit inputs, %d-bit tile accumulators, kernel %s\n",
	       sh->o->data, sh->C, sh->n_tasks, sh->o->memory, sh->o->epochs, sh->o->bits,
	       sh->o->acc_bits, hdqt_kernel_name());
	printf("%-11s %-9s", "quant", "method");
	for (int t = 0; t < sh->n_tasks; t++)
		printf("  task%-2d", t + 1);
	printf("  %-13s  %-13s  %-13s  %-13s  %s\n", "avg-inc", "avg-inc(NME)", "last", "forgetting", "samples/s");
	for (int i = 0; i < ng; i++) {
		group *g = &gs[i];
		printf("%-11s %-9s", hdqt_mode_name(g->mode), hdqt_cl_method_name(g->method));
		for (int t = 0; t < sh->n_tasks; t++)
			printf("  %6.2f", g->task[t].mean);
		char a[32], b[32], c[32], d[32];
		fmt_agg(a, sizeof(a), g->aia);
		fmt_agg(b, sizeof(b), g->aia_nme);
		fmt_agg(c, sizeof(c), g->last);
		fmt_agg(d, sizeof(d), g->forget);
		double bw, ba;
		model_bits(sh->o, g->mode, sh->train.d, sh->C, &bw, &ba);
		printf("  %s  %s  %s  %s  %.0f  bits/w %.2f bits/a %.2f", a, b, c, d, g->sps, bw, ba);
		if (g->diverged)
			printf("  (%d of %d runs diverged: loss not finite)", g->diverged, g->n);
		printf("\n");
	}
	for (int i = 0; sh->o->open_set && i < ng; i++)
		for (int k = 0; k < HDQT_NOVELTY_COUNT; k++) {
			const agg *a = gs[i].os[k];
			if (isnan(a[0].mean))
				continue;
			printf("open set %s %s, %d unseen classes, score %-6s: AUROC %.3f ± %.3f, called unknown: "
			       "known %.1f%% ± %.1f (target %.1f%%), unseen %.1f%% ± %.1f\n",
			       hdqt_mode_name(gs[i].mode), hdqt_cl_method_name(gs[i].method), sh->o->open_set,
			       hdqt_novelty_kind_name((hdqt_novelty_kind)k), a[0].mean, a[0].std, 100 * a[1].mean,
			       100 * a[1].std, 100 * sh->o->unknown_rate, 100 * a[2].mean, 100 * a[2].std);
		}
	/* The per-task F1 scores under the accuracies' columns, then each
	 * class's forgetting. */
	for (int i = 0; i < ng; i++) {
		printf("%-11s %-9s", "  macro-F1", hdqt_cl_method_name(gs[i].method));
		for (int t = 0; t < sh->n_tasks; t++)
			printf("  %6.2f", gs[i].f1_macro[t].mean);
		printf("  (%s)\n", hdqt_mode_name(gs[i].mode));
		printf("%-11s %-9s", "  micro-F1", hdqt_cl_method_name(gs[i].method));
		for (int t = 0; t < sh->n_tasks; t++)
			printf("  %6.2f", gs[i].f1_micro[t].mean);
		printf("  (%s)\n", hdqt_mode_name(gs[i].mode));
	}
	for (int i = 0; i < ng; i++) {
		printf("forgetting per class, pp (%s %s):", hdqt_mode_name(gs[i].mode),
		       hdqt_cl_method_name(gs[i].method));
		for (int c = 0; c < sh->C; c++)
			if (!isnan(gs[i].class_forget[c].mean))
				printf(" %d: %.1f", sh->class_ids[c], gs[i].class_forget[c].mean);
		printf("\n");
	}
	if (sh->o->order_kind != 0) {
		printf("class order%s:", sh->n_orders > 1 ? "s" : "");
		for (int k = 0; k < sh->n_orders; k++) {
			printf("%s", k ? " |" : "");
			for (int c = 0; c < sh->C; c++)
				printf("%s%d", c ? "," : " ", sh->order_ids[k][c]);
		}
		printf("\n");
	}
	int gaps = 0;
	for (int i = 0; i < ng; i++) {
		const group *ref = fp32_ref(gs, ng, &gs[i]);
		if (!ref)
			continue;
		double dn = gs[i].aia_nme.mean - ref->aia_nme.mean;
		char nme[16] = "-";
		if (!isnan(dn))
			snprintf(nme, sizeof(nme), "%+.2f", dn);
		printf("%s %s %s %+.2f / %s", gaps ? "," : "gap to fp32 in avg-inc, pp (logits / NME):",
		       hdqt_mode_name(gs[i].mode), hdqt_cl_method_name(gs[i].method),
		       gs[i].aia.mean - ref->aia.mean, nme);
		gaps++;
	}
	if (gaps)
		printf("\n");
	for (int i = 0; i < ng; i++) {
		if (!hdqt_mode_is_hadanet(gs[i].mode))
			continue;
		for (int l = 0; l < HDQT_MAX_LAYERS; l++) {
			if (!gs[i].r[0]->bst[l].binary)
				continue;
			double z, cut, e[3];
			bin_stats_mean(&gs[i], l, &z, &cut, e);
			printf("%s %s layer %d input (training users): %.1f%% zeros, %.2f%% cut by the STE clip; "
			       "|X~ - X| / |X|: sign %.3f, mask %.3f, centre %.3f\n",
			       hdqt_mode_name(gs[i].mode), hdqt_cl_method_name(gs[i].method), l, 100 * z, 100 * cut,
			       e[0], e[1], e[2]);
		}
	}
	printf("(accuracy %% on held-out users, mean ± std over %d run(s): %d seed(s) x %d class order(s); "
	       "wall %.1f s, peak RSS %ld kB)\n", gs[0].n, sh->o->seeds, sh->n_orders, wall, rss);
}

static int write_svg(const char *path, shared *sh, group *gs, int ng)
{
	char tmp[4096];
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	FILE *f = fopen(tmp, "w");
	if (!f)
		return HDQT_EIO;
	const int W = 640, H = 400, L = 60, R = 180, T = 30, B = 50;
	const int pw = W - L - R, ph = H - T - B;
	static const char *const colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e",
					     "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"};
	fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\" font-size=\"12\">\n", W, H);
	fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
	fprintf(f, "<text x=\"%d\" y=\"18\" font-size=\"14\">Accuracy after each task (%%), %d-bit / %d-bit acc</text>\n", L, sh->o->bits, sh->o->acc_bits);
	for (int v = 0; v <= 100; v += 20) {
		double y = T + ph - ph * v / 100.0;
		fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", L, y, L + pw, y);
		fprintf(f, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%d</text>\n", L - 6, y + 4, v);
	}
	int nt = sh->n_tasks;
	for (int t = 0; t < nt; t++) {
		double x = L + (nt > 1 ? pw * t / (double)(nt - 1) : pw / 2.0);
		fprintf(f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%d</text>\n", x, T + ph + 18, sh->task_end[t]);
	}
	fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">classes seen</text>\n", L + pw / 2, H - 10);
	for (int i = 0; i < ng; i++) {
		const char *col = colors[i % 8];
		fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", col);
		for (int t = 0; t < nt; t++) {
			double x = L + (nt > 1 ? pw * t / (double)(nt - 1) : pw / 2.0);
			double y = T + ph - ph * gs[i].task[t].mean / 100.0;
			fprintf(f, "%.1f,%.1f ", x, y);
		}
		fprintf(f, "\"/>\n");
		fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"12\" height=\"3\" fill=\"%s\"/>", L + pw + 15, T + 10 + 18 * i, col);
		fprintf(f, "<text x=\"%d\" y=\"%d\">%s %s</text>\n", L + pw + 32, T + 15 + 18 * i,
			hdqt_mode_name(gs[i].mode), hdqt_cl_method_name(gs[i].method));
	}
	fprintf(f, "</svg>\n");
	int bad = ferror(f);
	bad |= fflush(f) != 0;
	bad |= fsync(fileno(f)) != 0;
	bad |= fclose(f) != 0;
	if (bad || rename(tmp, path) != 0) {
		unlink(tmp);
		return HDQT_EIO;
	}
	return 0;
}

int main(int argc, char **argv)
{
	static opts o;
	if (parse_opts(argc, argv, &o) < 0)
		return 2;
	/* static: the per-order tables are too large for the stack */
	static shared sh;
	memset(&sh, 0, sizeof(sh));
	sh.o = &o;
	pthread_mutex_init(&sh.mu, NULL);
	sh.tty = isatty(2) && !o.json;
	double t0 = now_s();
	int prc = prepare(&sh, &o);
	if (prc < 0)
		return 1;
	if (prc > 0)
		return 0; /* --dump-features */
	if (setup_orders(&sh, &o) < 0)
		return 2;
	/* parse_opts bounded the count by MAX_RUNS */
	const int n_runs = o.n_modes * o.n_methods * o.seeds * sh.n_orders;
	sh.runs = calloc((size_t)n_runs, sizeof(run_result));
	if (!sh.runs) {
		fprintf(stderr, "hdqt-eval: out of memory for %d runs\n", n_runs);
		return 1;
	}
	for (int a = 0; a < o.n_modes; a++)
		for (int b = 0; b < o.n_methods; b++)
			for (int s = 1; s <= o.seeds; s++)
				for (int k = 0; k < sh.n_orders; k++) {
					run_result *r = &sh.runs[sh.n_runs++];
					r->mode = o.modes[a];
					r->method = o.methods[b];
					r->seed = s;
					r->order = k;
				}
	sh.total_epochs = sh.n_runs * sh.n_tasks * o.epochs;
	int nth = o.jobs < sh.n_runs ? o.jobs : sh.n_runs;
	pthread_t th[256];
	int started = 0;
	for (int i = 0; i < nth; i++) {
		if (pthread_create(&th[i], NULL, worker, &sh) != 0)
			break;
		started++;
	}
	if (started == 0)
		worker(&sh);
	for (int i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	if (sh.tty)
		fprintf(stderr, "\n");
	for (int i = 0; i < sh.n_runs; i++)
		if (sh.runs[i].rc < 0) {
			fprintf(stderr, "hdqt-eval: run %s/%s seed %d order %d failed: %s\n",
				hdqt_mode_name(sh.runs[i].mode), hdqt_cl_method_name(sh.runs[i].method),
				sh.runs[i].seed, sh.runs[i].order + 1, hdqt_strerror(sh.runs[i].rc));
			return 1;
		}
	static group gs[HDQT_MODE_COUNT * HDQT_CL_COUNT];
	int ng = 0;
	for (int i = 0; i < sh.n_runs; i++) {
		int g = -1;
		for (int k = 0; k < ng; k++)
			if (gs[k].mode == sh.runs[i].mode && gs[k].method == sh.runs[i].method)
				g = k;
		if (g < 0) {
			g = ng++;
			memset(&gs[g], 0, sizeof(gs[g]));
			gs[g].mode = sh.runs[i].mode;
			gs[g].method = sh.runs[i].method;
		}
		gs[g].r[gs[g].n++] = &sh.runs[i];
	}
	for (int k = 0; k < ng; k++)
		summarise(&sh, &gs[k]);
	double wall = now_s() - t0;
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	if (o.json) {
		if (ng == 1) {
			print_json_group(&sh, &gs[0], NULL, wall, ru.ru_maxrss);
		} else {
			printf("{\"runs\": [");
			for (int k = 0; k < ng; k++) {
				if (k)
					printf(", ");
				print_json_group(&sh, &gs[k], fp32_ref(gs, ng, &gs[k]), wall, ru.ru_maxrss);
			}
			printf("], \"wall_s\": %.2f, \"peak_rss_kb\": %ld}", wall, ru.ru_maxrss);
		}
		printf("\n");
	} else {
		print_table(&sh, gs, ng, wall, ru.ru_maxrss);
	}
	if (o.plot && write_svg(o.plot, &sh, gs, ng) < 0) {
		fprintf(stderr, "hdqt-eval: cannot write %s\n", o.plot);
		return 1;
	}
	free(sh.train.X);
	free(sh.train.y);
	free(sh.test.X);
	free(sh.test.y);
	free(sh.calib.X);
	free(sh.calib.y);
	free(sh.mean);
	free(sh.std);
	for (int i = 0; i < sh.n_runs; i++)
		free(sh.runs[i].class_forget);
	free(sh.runs);
	return 0;
}
