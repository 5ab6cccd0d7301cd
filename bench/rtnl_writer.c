/*
 * The route programming benchmark's limit: a C writer of batched rtnetlink.
 *
 * It sends the same requests l3fabric's route socket sends (RTM_NEWROUTE with
 * CREATE|REPLACE, RTM_DELROUTE matching protocol 76), BATCH requests per
 * sendmsg with an ack asked for on the last of each batch only, and waits for
 * that ack before the next batch. No per-route work is left but building the
 * message, so what it takes is what the kernel takes.
 *
 *   rtnl_writer add|del v4|v6|mp COUNT BATCH IFINDEX [GATEWAY4 ...]
 *
 * v4: COUNT /32s from 100.64.0.0 via device IFINDEX (scope link);
 * v6: COUNT /128s from fd00:64:: via device IFINDEX;
 * mp: COUNT /32s from 100.64.0.0 with one next hop per IPv4 GATEWAY.
 * Prints the seconds spent from the first send to the last ack (its own
 * start is not timed, as l3fabric's is not). Any error the kernel reports:
 * a message on stderr and exit status 1. Bad arguments: exit status 2.
 *
 * Built by bench/route_programming.py with the machine's cc for each run.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PROTO_L3FABRIC 76
#define MAX_GATEWAYS 8
#define MSG_SPACE 256 /* one request, multipath with MAX_GATEWAYS included */

static int fail(const char *what) {
    fprintf(stderr, "rtnl_writer: %s: %s\n", what, strerror(errno));
    return 1;
}

static void put_attr(char *msg, unsigned short type, const void *data, unsigned short len) {
    struct nlmsghdr *nlh = (struct nlmsghdr *)msg;
    struct rtattr *rta = (struct rtattr *)(msg + NLMSG_ALIGN(nlh->nlmsg_len));
    rta->rta_type = type;
    rta->rta_len = RTA_LENGTH(len);
    memcpy(RTA_DATA(rta), data, len);
    nlh->nlmsg_len = NLMSG_ALIGN(nlh->nlmsg_len) + RTA_ALIGN(rta->rta_len);
}

struct job {
    int add, family, count, batch, ifindex, gateways;
    struct in_addr gateway[MAX_GATEWAYS];
};

/* Builds request i (sequence number seq) into msg; returns its length. */
static size_t build(const struct job *job, int i, uint32_t seq, int ack, char *msg) {
    struct nlmsghdr *nlh = (struct nlmsghdr *)msg;
    struct rtmsg *rtm;
    memset(msg, 0, MSG_SPACE);
    nlh->nlmsg_len = NLMSG_LENGTH(sizeof(struct rtmsg));
    nlh->nlmsg_type = job->add ? RTM_NEWROUTE : RTM_DELROUTE;
    nlh->nlmsg_flags = NLM_F_REQUEST | (job->add ? NLM_F_CREATE | NLM_F_REPLACE : 0);
    if (ack)
        nlh->nlmsg_flags |= NLM_F_ACK;
    nlh->nlmsg_seq = seq;
    rtm = NLMSG_DATA(nlh);
    rtm->rtm_family = job->family;
    rtm->rtm_table = RT_TABLE_MAIN;
    rtm->rtm_protocol = PROTO_L3FABRIC;
    rtm->rtm_type = RTN_UNICAST;
    if (job->family == AF_INET) {
        uint32_t dst = htonl(0x64400000u + (uint32_t)i); /* 100.64.0.0 + i */
        rtm->rtm_dst_len = 32;
        put_attr(msg, RTA_DST, &dst, sizeof dst);
    } else {
        unsigned char dst[16] = {0xfd, 0x00, 0x00, 0x64}; /* fd00:64:: + i */
        dst[12] = (unsigned char)(i >> 24);
        dst[13] = (unsigned char)(i >> 16);
        dst[14] = (unsigned char)(i >> 8);
        dst[15] = (unsigned char)i;
        rtm->rtm_dst_len = 128;
        put_attr(msg, RTA_DST, dst, sizeof dst);
    }
    if (!job->add) {
        rtm->rtm_scope = RT_SCOPE_NOWHERE;
    } else if (job->gateways) {
        char hops[MAX_GATEWAYS * 16];
        size_t used = 0;
        rtm->rtm_scope = RT_SCOPE_UNIVERSE;
        for (int g = 0; g < job->gateways; g++) {
            struct rtnexthop *nh = (struct rtnexthop *)(hops + used);
            struct rtattr *gw = (struct rtattr *)((char *)nh + RTNH_ALIGN(sizeof *nh));
            memset(nh, 0, sizeof *nh);
            gw->rta_type = RTA_GATEWAY;
            gw->rta_len = RTA_LENGTH(sizeof(struct in_addr));
            memcpy(RTA_DATA(gw), &job->gateway[g], sizeof(struct in_addr));
            nh->rtnh_len = RTNH_ALIGN(sizeof *nh) + RTA_ALIGN(gw->rta_len);
            used += RTNH_ALIGN(nh->rtnh_len);
        }
        put_attr(msg, RTA_MULTIPATH, hops, (unsigned short)used);
    } else {
        uint32_t oif = (uint32_t)job->ifindex;
        rtm->rtm_scope = job->family == AF_INET ? RT_SCOPE_LINK : RT_SCOPE_UNIVERSE;
        put_attr(msg, RTA_OIF, &oif, sizeof oif);
    }
    return NLMSG_ALIGN(nlh->nlmsg_len);
}

/* Reads replies until the ack of last_seq; counts the errors reported. */
static int wait_ack(int fd, uint32_t last_seq, char *buf, size_t size, int *errors) {
    for (;;) {
        ssize_t got = recv(fd, buf, size, 0);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            return fail("recv");
        }
        for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)got);
             h = NLMSG_NEXT(h, got)) {
            if (h->nlmsg_type != NLMSG_ERROR)
                continue;
            struct nlmsgerr *err = NLMSG_DATA(h);
            if (err->error) {
                if (++*errors == 1)
                    fprintf(stderr, "rtnl_writer: request %u: %s\n", h->nlmsg_seq,
                            strerror(-err->error));
            }
            if (h->nlmsg_seq == last_seq)
                return 0;
        }
    }
}

static int parse(int argc, char **argv, struct job *job) {
    if (argc < 6)
        return -1;
    job->add = strcmp(argv[1], "add") == 0;
    if (!job->add && strcmp(argv[1], "del") != 0)
        return -1;
    job->family = strcmp(argv[2], "v6") == 0 ? AF_INET6 : AF_INET;
    if (strcmp(argv[2], "v4") && strcmp(argv[2], "v6") && strcmp(argv[2], "mp"))
        return -1;
    job->count = atoi(argv[3]);
    job->batch = atoi(argv[4]);
    job->ifindex = atoi(argv[5]);
    job->gateways = argc - 6;
    if (job->count < 1 || job->count > 1 << 24 || job->batch < 1 || job->batch > 4096)
        return -1;
    if (job->gateways > MAX_GATEWAYS || (strcmp(argv[2], "mp") == 0) != (job->gateways > 0))
        return -1;
    if (!job->gateways && job->add && job->ifindex < 1)
        return -1;
    for (int g = 0; g < job->gateways; g++)
        if (inet_pton(AF_INET, argv[6 + g], &job->gateway[g]) != 1)
            return -1;
    return 0;
}

int main(int argc, char **argv) {
    struct job job;
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    struct timespec t0, t1;
    int fd, errors = 0, rcvbuf = 4 << 20;
    uint32_t seq = 1;
    char *out, reply[1 << 16];

    if (parse(argc, argv, &job)) {
        fprintf(stderr, "usage: rtnl_writer add|del v4|v6|mp COUNT BATCH IFINDEX [GATEWAY4 ...]\n");
        return 2;
    }
    fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (fd < 0)
        return fail("socket");
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    if (connect(fd, (struct sockaddr *)&kernel, sizeof kernel))
        return fail("connect");
    out = malloc((size_t)job.batch * MSG_SPACE);
    if (!out)
        return fail("malloc");

    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int start = 0; start < job.count; start += job.batch) {
        int end = start + job.batch < job.count ? start + job.batch : job.count;
        size_t len = 0;
        for (int i = start; i < end; i++)
            len += build(&job, i, seq + (uint32_t)(i - start), i == end - 1, out + len);
        if (send(fd, out, len, 0) != (ssize_t)len)
            return fail("send");
        if (wait_ack(fd, seq + (uint32_t)(end - 1 - start), reply, sizeof reply, &errors))
            return 1;
        seq += (uint32_t)(end - start);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (errors) {
        fprintf(stderr, "rtnl_writer: %d requests failed\n", errors);
        return 1;
    }
    printf("%.6f\n", (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
    return 0;
}
