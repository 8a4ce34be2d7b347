/* fp_state.c: what nixrec's C tracer loop holds (fastpath.c has the
   overview): its settings from Python (fastpath.py), the answers Python
   taught it (predict.py's, keyed as predict.question), the calls between
   their entry and exit stops, and the sets of pids it keeps. */
#include "fastpath.h"

/* --- set-up (fastpath.py) --------------------------------------------------------- */
/* The interface's version: fastpath.py uses a library only when it says the
   same (a library left from another checkout is ignored, not misread). */
int fp_abi(void) { return 3; }

void *fp_new(char *buf, size_t cap) {
    struct ctx *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->slow_nr = -1;
    c->buf = buf;
    c->cap = cap;
    return c;
}

static void clear_answers(struct ctx *c) {
    for (int i = 0; i < ABUCKETS; i++) {
        struct answer *a = c->ans[i];
        while (a) { struct answer *n = a->next; free(a); a = n; }
        c->ans[i] = NULL;
    }
    c->nanswers = 0;
}

void fp_free(struct ctx *c) {
    if (!c) return;
    clear_answers(c);
    for (int i = 0; i < PBUCKETS; i++) {
        struct pending *p = c->pend[i];
        while (p) { struct pending *n = p->next; free(p); p = n; }
    }
    struct pending *p = c->free_pend;
    while (p) { struct pending *n = p->next; free(p); p = n; }
    set_free(c->known);
    set_free(c->unborn);
    set_free(c->shared);
    set_free(c->rings);
    free(c);
}

void fp_set_call(struct ctx *c, int nr, int kind, int i_path, int i_dirfd, int needs_exit,
                 int lk_where, int lk_i, int lk_mode, int lk_stat) {
    if (nr < 0 || nr >= NR_MAX) return;
    c->kind[nr] = kind;
    c->i_path[nr] = i_path;
    c->i_dirfd[nr] = i_dirfd;
    c->needs_exit[nr] = needs_exit;
    c->lk_where[nr] = lk_where;
    c->lk_i[nr] = lk_i;
    c->lk_mode[nr] = lk_mode;
    c->lk_stat[nr] = lk_stat;
}

void fp_set_options(struct ctx *c, int predict, int has_rdev, uint64_t rdev, int64_t spin_ns,
                    int64_t idle_ns) {
    c->idle_ns = idle_ns;
    c->predict = predict;
    c->has_rdev = has_rdev;
    c->rdev = rdev;
    c->spin_ns = spin_ns;
}

void fp_set_predict(struct ctx *c, int on) { c->predict = on; }

/* A busy build may stop again within idle_ns for a long while: records then
   wait here, where a SIGKILLed recorder loses them. Past flush_ns the loop
   returns (R_IDLE) so that they become events, and go to the trace file
   (tracefile/writer.py: a killed recorder loses at most ~0.1 s). */
void fp_set_flush(struct ctx *c, int64_t flush_ns) { c->flush_ns = flush_ns; }

void fp_set_slow(struct ctx *c, int all_slow, int slow_nr) {
    c->all_slow = all_slow;
    c->slow_nr = slow_nr;
}

/* Replay: before the loop handles a stop, every earlier record is an event.
   Its hook then sees each call as soon as it ran, and a divergence it finds
   there makes the very next stop Python's (all_slow), as without this loop. */
void fp_set_lockstep(struct ctx *c, int on) { c->lockstep = on; }

void fp_watch(struct ctx *c, const int *pids, int n) {
    if (n > WATCH_MAX) { c->all_slow = 1; n = 0; }   /* too many: all of them */
    memcpy(c->watched, pids, n * sizeof(int));
    c->nwatched = n;
}

long fp_stops(struct ctx *c) { return c->stops; }

/* --- the answers Python taught (predict.py), keyed as predict.question ----------- */
static uint64_t hash_of(const char *raw, uint32_t len, int follow, int asked) {
    uint64_t h = 1469598103934665603ULL;      /* FNV-1a */
    for (uint32_t i = 0; i < len; i++) { h ^= (uint8_t)raw[i]; h *= 1099511628211ULL; }
    h ^= (uint64_t)(follow * 16 + asked);
    h *= 1099511628211ULL;
    return h;
}

FP_HIDDEN struct answer *find_answer(struct ctx *c, const char *raw, uint32_t len,
                                  int follow, int asked) {
    uint64_t h = hash_of(raw, len, follow, asked);
    for (struct answer *a = c->ans[h % ABUCKETS]; a; a = a->next)
        if (a->hash == h && a->len == len && a->follow == follow && a->asked == asked
            && memcmp(a->raw, raw, len) == 0)
            return a;
    return NULL;
}

/* state A_EXIT: let the call run to its exit stop; A_ANSWER: rval is the answer. */
void fp_learn(struct ctx *c, const char *raw, uint32_t len, int follow, int asked,
              int state, int64_t rval) {
    if (find_answer(c, raw, len, follow, asked)) return;
    if (c->nanswers >= ANSWERS_MAX) clear_answers(c);
    struct answer *a = malloc(sizeof *a + len);
    if (!a) return;
    a->hash = hash_of(raw, len, follow, asked);
    a->follow = follow;
    a->asked = asked;
    a->state = state;
    a->rval = rval;
    a->len = len;
    memcpy(a->raw, raw, len);
    a->next = c->ans[a->hash % ABUCKETS];
    c->ans[a->hash % ABUCKETS] = a;
    c->nanswers++;
}

/* --- calls between entry and exit --------------------------------------------------- */
FP_HIDDEN struct pending *take_pending(struct ctx *c, int pid) {
    struct pending **pp = &c->pend[(unsigned)pid % PBUCKETS];
    for (; *pp; pp = &(*pp)->next)
        if ((*pp)->pid == pid) {
            struct pending *p = *pp;
            *pp = p->next;
            return p;
        }
    return NULL;
}

FP_HIDDEN void put_pending(struct ctx *c, struct pending *p) {
    unsigned b = (unsigned)p->pid % PBUCKETS;
    p->next = c->pend[b];
    c->pend[b] = p;
}

FP_HIDDEN void release(struct ctx *c, struct pending *p) {
    p->next = c->free_pend;
    c->free_pend = p;
}

/* A process that exited or exec'd has no call in flight any more. */
FP_HIDDEN void forget(struct ctx *c, int pid) {
    struct pending *p = take_pending(c, pid);
    if (p) release(c, p);
}

/* --- sets of pids ------------------------------------------------------------------ */
FP_HIDDEN struct pnode *set_find(struct pnode **set, int pid) {
    for (struct pnode *n = set[(unsigned)pid % PBUCKETS]; n; n = n->next)
        if (n->pid == pid) return n;
    return NULL;
}

FP_HIDDEN void set_add(struct pnode **set, int pid, int status) {
    struct pnode *n = set_find(set, pid);
    if (!n) {
        if (!(n = malloc(sizeof *n))) return;
        n->pid = pid;
        n->next = set[(unsigned)pid % PBUCKETS];
        set[(unsigned)pid % PBUCKETS] = n;
    }
    n->status = status;
}

/* -> 1 and its status if pid was in the set (and is no more). */
FP_HIDDEN int set_take(struct pnode **set, int pid, int *status) {
    for (struct pnode **pp = &set[(unsigned)pid % PBUCKETS]; *pp; pp = &(*pp)->next)
        if ((*pp)->pid == pid) {
            struct pnode *n = *pp;
            *pp = n->next;
            if (status) *status = n->status;
            free(n);
            return 1;
        }
    return 0;
}

FP_HIDDEN void set_free(struct pnode **set) {
    for (int i = 0; i < PBUCKETS; i++) {
        struct pnode *n = set[i];
        while (n) { struct pnode *x = n->next; free(n); n = x; }
        set[i] = NULL;
    }
}

/* The builder, seized by Python: the first tracee. */
void fp_add(struct ctx *c, int pid) {
    if (!set_find(c->known, pid)) c->live++;
    set_add(c->known, pid, 0);
}

/* Python saw a tracee exit itself (replay's freeze, the drain after a kill). */
void fp_exited(struct ctx *c, int pid) {
    forget(c, pid);
    set_take(c->shared, pid, NULL);
    set_take(c->rings, pid, NULL);
    if (set_take(c->known, pid, NULL)) c->live--;
}

void fp_set_notable(struct ctx *c, uint64_t mask) { c->notable = mask; }

/* What makes an open "plain read-only" (syscalls.OPEN_READ_BITS): O_RDONLY
   (no accmode bit) and no bit outside `bits`; `directory` is O_DIRECTORY. */
void fp_set_open_read(struct ctx *c, uint64_t bits, uint64_t directory, uint64_t accmode) {
    c->open_read_bits = bits;
    c->o_directory = directory;
    c->o_accmode = accmode;
}

FP_HIDDEN int watched(struct ctx *c, int pid) {
    for (int i = 0; i < c->nwatched; i++)
        if (c->watched[i] == pid) return 1;
    return 0;
}
